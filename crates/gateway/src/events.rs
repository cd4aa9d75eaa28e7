//! The agent event stream: `GET /api/v1/events` (WebSocket).
//!
//! Events are rows written in the same transaction as the change they describe. A
//! sequencer gives them stream positions in a commit-safe order (see the
//! `event_positions` and `event_stream` migrations); one listener per process hears "new
//! positions" and wakes every socket, which then reads its next page from the database by
//! cursor. So a socket never holds a pooled connection while idle, a slow client cannot
//! grow memory (it pulls pages of bounded size), a lost notification only delays delivery
//! until the next ping tick, and a client that reconnects with `?after=<last id>` gets
//! every later event exactly once, in order.

use std::time::Duration;

use axum::{
    extract::{
        Query, State, WebSocketUpgrade,
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket},
    },
    http::HeaderMap,
    response::Response,
};
use conversation_store::events;
use futures_util::{SinkExt as _, StreamExt as _};
use parley_core::{Principal, Role};
use serde::Deserialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use utoipa::IntoParams;

use crate::{app::AppState, error::ApiError};

/// Close code: the client was too slow to keep up; reconnect with `after`.
pub const CLOSE_RESUME: u16 = 4001;
/// Close code: the client's `after` is older than the retained events; reload state and
/// reconnect without `after`.
pub const CLOSE_RESYNC: u16 = 4002;
/// Events per page read from the database.
const PAGE: i64 = 200;
/// Ping interval (keeps proxies from closing idle sockets; also a resync tick).
const PING_EVERY: Duration = Duration::from_secs(20);

/// Assign stream positions whenever events are appended (one sequencer at a time across
/// replicas; the others find the lock taken and wait for the next wake-up).
pub async fn run_sequencer(state: AppState, shutdown: CancellationToken) {
    let pool = state.db.clone();
    let wakeups = state.wakeups.clone();
    let origin = wakeups.origin();
    let feed = state.feed.clone();
    channel_connector::worker::run(
        state.wakeups.subscribe(events::APPEND_CHANNEL),
        "sequencer",
        Duration::from_millis(500),
        shutdown,
        || {
            let pool = pool.clone();
            let wakeups = wakeups.clone();
            let origin = origin.clone();
            let feed = feed.clone();
            async move {
                let mut conn = pool.acquire().await?;
                let epoch = feed.epoch();
                match events::sequence(&mut conn).await {
                    Ok(sequenced) => {
                        let n = sequenced.len();
                        if n > 0 {
                            // This process's sockets at once (or its feed reads them, if
                            // another replica's positions come first); the other
                            // replicas' through the database.
                            if !feed.offer(sequenced, epoch).await {
                                wakeups.bump(events::READY_CHANNEL);
                            }
                            if let Err(e) = events::announce_ready(&mut conn, &origin).await {
                                tracing::debug!(error = %e, "new positions not announced");
                            }
                        }
                        // A round short of the limit left nothing ready: wait for the
                        // next wake-up (an append committed since then sends one) instead
                        // of asking again at once.
                        Ok(if n < events::SEQUENCE_ROUND { 0 } else { n })
                    }
                    Err(conversation_store::StoreError::Database(e)) => Err(e),
                    Err(e) => Err(sqlx::Error::Protocol(e.to_string())),
                }
            }
        },
    )
    .await;
}

/// Delete events past their retention, hourly (in rounds of a bounded size until none is
/// left).
pub async fn run_pruner(db: PgPool, keep: Duration, shutdown: CancellationToken) {
    loop {
        while !shutdown.is_cancelled() {
            let round = match db.acquire().await {
                Ok(mut conn) => events::prune(&mut conn, keep.as_secs_f64()).await,
                Err(e) => Err(e.into()),
            };
            match round {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "event pruning failed");
                    break;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {},
        }
    }
}

/// Where to start and how to authenticate.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// The last event id the client saw; omitted: only events from now on.
    pub after: Option<i64>,
    /// The access token, for browsers (which cannot set headers on a WebSocket).
    pub access_token: Option<String>,
}

/// The agent event stream (WebSocket). Authenticate with `Authorization: Bearer` or
/// `?access_token=`. Each text frame is `{id, kind, payload, created_at}`; reconnect with
/// `?after=<last id>` to get every later event exactly once, in order. Close code 4001
/// means the client fell behind: reconnect with `after`.
#[utoipa::path(get, path = "/events", tag = "events", security(("bearer" = [])),
    params(EventsQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The user or the client address has too many event-stream connections open", body = crate::error::Problem, content_type = "application/problem+json"),
        crate::error::CommonErrors,
    ))]
pub async fn events_ws(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(crate::app::ClientAddr(peer)): axum::extract::ConnectInfo<
        crate::app::ClientAddr,
    >,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or(q.access_token)
        .ok_or_else(|| {
            ApiError::unauthorized(
                "missing_token",
                "send `Authorization: Bearer <token>` or `?access_token=`",
            )
        })?;
    let verified = crate::auth::authenticate_full(&state, token.trim()).await?;
    let principal = verified.principal;
    if q.after.is_some_and(|a| a < 0) {
        return Err(ApiError::invalid_field(
            "after",
            "must be an event id (0 or more)",
        ));
    }
    let from_ip = state
        .sockets
        .take(SlotKey::SocketsFrom(peer.ip()), state.config.ws_max_per_ip)
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "too_many_sockets",
                format!(
                    "this address already has {} event-stream connections open here",
                    state.config.ws_max_per_ip
                ),
            )
        })?;
    // Every process keeps file descriptors for HTTP requests, webhooks and the database
    // (`PARLEY_WS_MAX_TOTAL` below its open-file limit), and one tenant cannot take all
    // the sockets: 20,000 of one tenant's once starved every other tenant.
    let all = state
        .sockets
        .take(SlotKey::AllSockets, state.config.ws_max_total)
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "too_many_sockets",
                "this server holds as many event-stream connections as it can; try another replica or again shortly",
            )
        })?;
    let of_tenant = state
        .sockets
        .take(
            SlotKey::Tenant(principal.tenant_id.0),
            state.config.ws_max_per_tenant,
        )
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "too_many_sockets",
                format!(
                    "your organisation already has {} event-stream connections open here",
                    state.config.ws_max_per_tenant
                ),
            )
        })?;
    let slot = state
        .sockets
        .take(
            SlotKey::User(principal.user_id.0),
            state.config.ws_max_per_user,
        )
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "too_many_sockets",
                format!(
                    "this user already has {} event-stream connections open here; close one first",
                    state.config.ws_max_per_user
                ),
            )
        })?;
    let mut conn = state.db.acquire().await?;
    let head = events::global_head(&mut conn).await?;
    let start = q.after.unwrap_or(head);
    let pruned = events::pruned_through(&mut conn, principal.tenant_id).await?;
    drop(conn);
    // Resuming from before what is kept, or from beyond the newest event (a client
    // restored from a backup, or one that talked to another installation): either way it
    // cannot be given exactly what it missed, so it is told to resync.
    let resync = match q.after {
        Some(a) if a < pruned => {
            Some("events since `after` were pruned; resync and reconnect without after")
        }
        Some(a) if a > head => {
            Some("`after` is beyond the newest event; resync and reconnect without after")
        }
        _ => None,
    };
    if let Some(reason) = resync {
        return Ok(ws.on_upgrade(move |mut socket| async move {
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code: CLOSE_RESYNC,
                    reason: Utf8Bytes::from_static(reason),
                })))
                .await;
        }));
    }
    // Small buffers: an idle socket costs a few KiB instead of the ~128 KiB default. Frames
    // the client sends are tiny (pongs, close; the read buffer grows for a bigger one);
    // ours are bounded by the page size.
    Ok(ws
        .read_buffer_size(1024)
        .write_buffer_size(4 * 1024)
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| async move {
            serve_socket(state, verified, start, socket).await;
            drop(slot);
            drop(from_ip);
            drop(of_tenant);
            drop(all);
        }))
}

/// What a connection cap counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotKey {
    /// Event-stream sockets of one user.
    User(uuid::Uuid),
    /// Event-stream sockets from one client address.
    SocketsFrom(std::net::IpAddr),
    /// TCP connections from one client address.
    ConnectionsFrom(std::net::IpAddr),
    /// Event-stream sockets of one tenant's users.
    Tenant(uuid::Uuid),
    /// Every event-stream socket of this process.
    AllSockets,
    /// Uploads one user has in progress.
    UploadsBy(uuid::Uuid),
}

/// Open connections per user or client address on this process.
#[derive(Debug, Clone, Default)]
pub struct SocketCounts(
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<SlotKey, usize>>>,
);

/// Holds one slot until dropped.
#[derive(Debug)]
pub struct SocketSlot {
    counts: SocketCounts,
    key: SlotKey,
}

impl SocketCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<SlotKey, usize>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for `key`, unless it already holds `max`.
    pub fn take(&self, key: SlotKey, max: usize) -> Option<SocketSlot> {
        let mut m = self.lock();
        let n = m.entry(key).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SocketSlot {
            counts: self.clone(),
            key,
        })
    }
}

impl SocketCounts {
    /// Slots now held for `key`.
    pub fn held(&self, key: SlotKey) -> usize {
        self.lock().get(&key).copied().unwrap_or(0)
    }
}

/// When this process last recorded each user's presence, so a user with many sockets open
/// here costs one write per interval, not one per socket.
#[derive(Debug, Clone, Default)]
pub struct PresenceMarks(
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<uuid::Uuid, std::time::Instant>>>,
);

impl PresenceMarks {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<uuid::Uuid, std::time::Instant>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `user`'s presence should be written now (and if so, claims it: other
    /// sockets of the user skip until `every` has passed).
    fn claim(&self, user: uuid::Uuid, every: Duration) -> bool {
        let now = std::time::Instant::now();
        let mut m = self.lock();
        match m.get(&user) {
            Some(at) if now.duration_since(*at) < every => false,
            _ => {
                m.insert(user, now);
                true
            }
        }
    }

    fn forget(&self, user: uuid::Uuid) {
        self.lock().remove(&user);
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut m = self.counts.lock();
        if let Some(n) = m.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

/// Why a send to a socket ended the socket.
enum SendFailed {
    /// The client is gone.
    Gone,
    /// The client does not take frames: closed with 4001 (resume).
    TooSlow,
}

async fn send_text<S>(tx: &mut S, text: Utf8Bytes, timeout: Duration) -> Result<(), SendFailed>
where
    S: futures_util::Sink<Message> + Unpin,
{
    match tokio::time::timeout(timeout, tx.send(Message::Text(text))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(SendFailed::Gone),
        Err(_) => {
            // Its buffers are full; the close frame may not get through either.
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                tx.send(Message::Close(Some(CloseFrame {
                    code: CLOSE_RESUME,
                    reason: Utf8Bytes::from_static("too slow; reconnect with after"),
                }))),
            )
            .await;
            Err(SendFailed::TooSlow)
        }
    }
}

/// Catch up from the database: send every event after `cursor` this user may see. Returns
/// the new cursor and the global position through which nothing is missing, or `None`
/// when the database could not be read (try again later).
async fn catch_up<S>(
    state: &AppState,
    principal: &Principal,
    is_supervisor: bool,
    tx: &mut S,
    mut cursor: i64,
) -> Result<Option<(i64, i64)>, SendFailed>
where
    S: futures_util::Sink<Message> + Unpin,
{
    let head = {
        let Ok(mut conn) = state.db.acquire().await else {
            return Ok(None);
        };
        match events::global_head(&mut conn).await {
            Ok(h) => h,
            Err(_) => return Ok(None),
        }
    };
    loop {
        let page = async {
            let mut conn = state.db.acquire().await?;
            events::stream_after(
                &mut conn,
                principal.tenant_id,
                principal.user_id,
                is_supervisor,
                cursor,
                PAGE,
            )
            .await
            .map_err(|e| sqlx::Error::Protocol(e.to_string()))
        }
        .await;
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "event page failed; retrying shortly");
                return Ok(None);
            }
        };
        if page.is_empty() {
            // Everything up to `head` (read before this last, empty page) was sent.
            return Ok(Some((cursor, head.max(cursor))));
        }
        for e in page {
            let text = serde_json::to_string(&e).unwrap_or_default();
            send_text(tx, Utf8Bytes::from(text), state.config.ws_send_timeout).await?;
            cursor = e.id;
        }
    }
}

/// One page of the per-process feed: contiguous positions `first..=last`.
#[derive(Debug)]
pub struct FeedPage {
    first: i64,
    last: i64,
    /// The feed's epoch when these events were read.
    epoch: u64,
    events: Vec<(events::FeedEvent, Utf8Bytes)>,
}

/// The per-process event feed: each newly sequenced page is serialised once and handed
/// to every socket of this process, which filters it by tenant and audience. Pages this
/// process's sequencer assigned come straight from it ([`Feed::offer`]); others (another
/// replica's sequencer, or after a gap) are read from the database once by [`run_feed`].
/// A socket that falls behind the feed (or joins mid-way) reads from the database instead.
#[derive(Debug, Clone)]
pub struct Feed {
    pages: tokio::sync::broadcast::Sender<std::sync::Arc<FeedPage>>,
    /// Bumped when stored events were rewritten (an erasure): pages read before it may
    /// carry what was erased, and sockets read those positions from the database instead.
    epoch: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The last position published; `None` until [`run_feed`] has read the head. Held
    /// while publishing, so pages go out once each and in order.
    published: std::sync::Arc<tokio::sync::Mutex<Option<i64>>>,
}

/// A feed that keeps `pages` pages for sockets that are behind.
pub fn feed(pages: usize) -> Feed {
    Feed {
        pages: tokio::sync::broadcast::channel(pages).0,
        epoch: Default::default(),
        published: Default::default(),
    }
}

impl Feed {
    /// The current epoch: take it before reading events from the database.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stored events were rewritten (after the rewrite committed): pages read before now
    /// are not handed to sockets.
    pub fn invalidate(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Pages from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<std::sync::Arc<FeedPage>> {
        self.pages.subscribe()
    }

    /// Publish events this process just sequenced (contiguous positions, in order) if
    /// they follow the last page published. `false` when they do not (the feed has not
    /// started, or another replica's positions come between): read them from the
    /// database with [`run_feed`].
    pub async fn offer(&self, sequenced: Vec<events::FeedEvent>, epoch: u64) -> bool {
        let mut published = self.published.lock().await;
        let (Some(at), Some(first), Some(last)) = (*published, sequenced.first(), sequenced.last())
        else {
            return sequenced.is_empty();
        };
        if last.position <= at {
            return true;
        }
        if first.position != at + 1 {
            return false;
        }
        *published = Some(self.publish(sequenced, epoch));
        true
    }

    /// Send `events` (contiguous positions, in order, not empty) in pages of at most
    /// [`PAGE`]; returns the last position.
    fn publish(&self, events: Vec<events::FeedEvent>, epoch: u64) -> i64 {
        let mut last = 0;
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let page: Vec<(events::FeedEvent, Utf8Bytes)> = events
                .by_ref()
                .take(usize::try_from(PAGE).unwrap_or(usize::MAX))
                .map(|e| {
                    let text = e.stream_text();
                    (e, Utf8Bytes::from(text))
                })
                .collect();
            let (Some(first), Some(end)) = (page.first(), page.last()) else {
                break;
            };
            let (first, end) = (first.0.position, end.0.position);
            last = end;
            let _ = self.pages.send(std::sync::Arc::new(FeedPage {
                first,
                last: end,
                epoch,
                events: page,
            }));
        }
        last
    }
}

/// Read newly sequenced events into the feed that did not come from this process's
/// sequencer: woken by another replica's NOTIFY, a failed offer, or the tick.
pub async fn run_feed(state: AppState, shutdown: CancellationToken) {
    let mut wake = state.wakeups.subscribe(events::READY_CHANNEL);
    let mut erased = state.wakeups.subscribe(events::ERASED_CHANNEL);
    erased.mark_unchanged();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        wake.mark_unchanged();
        let round = async {
            // The connection first: the sequencer holds one while it offers a page, so
            // waiting for a connection while holding the lock could stall them both.
            let mut conn = state.db.acquire().await?;
            let mut published = state.feed.published.lock().await;
            let mut at = match *published {
                Some(c) => c,
                None => events::global_head(&mut conn).await?,
            };
            *published = Some(at);
            loop {
                let epoch = state.feed.epoch();
                let page = events::feed_after(&mut conn, at, PAGE).await?;
                if page.is_empty() {
                    break;
                }
                // A short page is the end for now (positions are a contiguous prefix).
                let more = i64::try_from(page.len()).unwrap_or(i64::MAX) >= PAGE;
                at = state.feed.publish(page, epoch);
                *published = Some(at);
                if !more {
                    break;
                }
            }
            Ok::<_, conversation_store::StoreError>(())
        }
        .await;
        if let Err(e) = round {
            tracing::warn!(error = %e, "event feed round failed; sockets read from the database meanwhile");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.changed() => {},
            // Another replica (or this one) rewrote stored events: drop what was read.
            changed = erased.changed() => {
                if changed.is_ok() {
                    state.feed.invalidate();
                }
            },
            _ = tick.tick() => {},
        }
    }
}

/// Close code: the credentials the socket was opened with no longer stand (the token
/// expired, the session was logged out, the password changed, the user was deactivated).
/// Refresh the token (or log in) and reconnect with `after`.
pub const CLOSE_UNAUTHORIZED: u16 = 4401;
/// Close code: the user's role changed, and with it what they may see. Reconnect with
/// `after`.
pub const CLOSE_ROLE_CHANGED: u16 = 4403;

/// Whether the socket's credentials still stand: `Some((code, reason))` to close it.
async fn credentials_lapsed(
    state: &AppState,
    verified: &crate::auth::Verified,
) -> Option<(u16, String)> {
    let mut conn = state.db.acquire().await.ok()?;
    match crate::auth::still_valid(&mut conn, verified).await {
        Ok(p) if p.role != verified.principal.role => Some((
            CLOSE_ROLE_CHANGED,
            "role_changed: your role changed; reconnect with after".to_owned(),
        )),
        Ok(_) => None,
        Err(e) if e.status() == axum::http::StatusCode::UNAUTHORIZED => Some((
            CLOSE_UNAUTHORIZED,
            format!("{}: log in again and reconnect with after", e.code()),
        )),
        // The database is away: keep serving; the next change or tick checks again.
        Err(_) => None,
    }
}

async fn serve_socket(
    state: AppState,
    verified: crate::auth::Verified,
    start: i64,
    socket: WebSocket,
) {
    let principal = verified.principal;
    let (mut tx, mut rx) = socket.split();
    // A change to who may hold a token (NOTIFY from any replica) makes every socket check
    // its own; its token's expiry closes it on time.
    let mut auth_changes = state
        .wakeups
        .subscribe(conversation_store::accounts::AUTH_CHANNEL);
    auth_changes.mark_unchanged();
    let mut auth_watched = true;
    let expires_in = u64::try_from(verified.exp - chrono::Utc::now().timestamp()).unwrap_or(0);
    let expiry = tokio::time::sleep(Duration::from_secs(expires_in));
    tokio::pin!(expiry);
    // Subscribe before catching up so nothing published meanwhile is missed.
    let mut feed = state.feed.subscribe();
    let shutdown = state.shutdown.clone();
    let mut cursor = start;
    // The global position through which this socket has seen everything; `None` until it
    // has caught up from the database (again, after falling behind the feed).
    let mut synced: Option<i64> = None;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut retry = tokio::time::interval(Duration::from_millis(500));
    let is_supervisor = principal.has_role(Role::Supervisor);
    let send_timeout = state.config.ws_send_timeout;
    // Presence: refreshed well within the offline grace period while the socket lives.
    let presence_every =
        (state.config.offline_grace / 3).clamp(Duration::from_millis(200), PING_EVERY);
    let mut presence = tokio::time::interval(presence_every);
    'outer: loop {
        if synced.is_none() {
            // Boxed: the catch-up's database futures would otherwise sit in every idle
            // socket's task for its whole life.
            match Box::pin(catch_up(&state, &principal, is_supervisor, &mut tx, cursor)).await {
                Ok(Some((c, s))) => {
                    cursor = c;
                    synced = Some(s);
                }
                Ok(None) => {}
                Err(_) => break 'outer,
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = tx.send(Message::Close(Some(CloseFrame { code: 1001, reason: Utf8Bytes::from_static("server shutting down; reconnect with after") }))).await;
                break;
            }
            page = feed.recv() => match page {
                Ok(page) => {
                    let Some(s) = synced else { continue };
                    if page.epoch < state.feed.epoch() {
                        // Read before an erasure: these positions come from the database.
                        synced = None;
                        continue;
                    }
                    if page.last <= s {
                        continue;
                    }
                    if page.first > s + 1 {
                        // A gap (the feed started after us): read it from the database.
                        synced = None;
                        continue;
                    }
                    for (e, text) in &page.events {
                        if e.position <= s
                            || e.position <= cursor
                            || !e.visible_to(principal.tenant_id, principal.user_id, is_supervisor)
                        {
                            continue;
                        }
                        if send_text(&mut tx, text.clone(), send_timeout).await.is_err() {
                            break 'outer;
                        }
                        cursor = e.position;
                    }
                    synced = Some(page.last);
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => synced = None,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            _ = retry.tick(), if synced.is_none() => {},
            () = &mut expiry => {
                let _ = tx.send(Message::Close(Some(CloseFrame {
                    code: CLOSE_UNAUTHORIZED,
                    reason: Utf8Bytes::from_static("token_expired: refresh the token and reconnect with after"),
                }))).await;
                break;
            }
            changed = auth_changes.changed(), if auth_watched => {
                if changed.is_err() {
                    auth_watched = false;
                    continue;
                }
                if let Some((code, reason)) = Box::pin(credentials_lapsed(&state, &verified)).await {
                    let _ = tx.send(Message::Close(Some(CloseFrame {
                        code,
                        reason: Utf8Bytes::from(reason),
                    }))).await;
                    break;
                }
            }
            _ = presence.tick() => {
                if state.presence.claim(principal.user_id.0, presence_every) {
                    Box::pin(touch_presence(&state, &principal, false)).await;
                }
            }
            _ = ping.tick() => {
                if tx.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
            incoming = rx.next() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    // The grace period before `offline` counts from the last disconnect (this socket's
    // slot is still held here).
    // It is also when new offers stop coming to them.
    if state.sockets.held(SlotKey::User(principal.user_id.0)) <= 1 {
        state.presence.forget(principal.user_id.0);
        Box::pin(touch_presence(&state, &principal, true)).await;
    }
}

async fn touch_presence(state: &AppState, principal: &Principal, lost: bool) {
    let touched = async {
        let mut conn = state.db.acquire().await?;
        interaction_router::touch_presence(&mut conn, principal.tenant_id, principal.user_id, lost)
            .await
    }
    .await;
    if let Err(e) = touched {
        // Let the next tick (of any of the user's sockets) try again.
        state.presence.forget(principal.user_id.0);
        tracing::debug!(error = %e, "presence not recorded");
    }
}
