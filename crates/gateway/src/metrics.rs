//! Prometheus metrics: request counts and latencies by route and status, and database
//! pool gauges read at scrape time.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::app::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// The gateway's metric registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pool_size: Gauge,
    pool_idle: Gauge,
    pool_max: Gauge,
    /// Webhooks per committed webhook transaction (group commit).
    pub ingest_batch: Histogram,
    /// Webhook batches that failed and were stored again one webhook per transaction.
    pub ingest_split: Counter,
}

impl Metrics {
    /// A fresh registry (one per app, so tests in one process don't share counters).
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("parley");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let pool_size = Gauge::default();
        let pool_idle = Gauge::default();
        let pool_max = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, matched route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency, by method and matched route",
            latency.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Connections currently open in the database pool",
            pool_size.clone(),
        );
        registry.register(
            "db_pool_idle_connections",
            "Idle connections in the database pool",
            pool_idle.clone(),
        );
        registry.register(
            "db_pool_max_connections",
            "The database pool's maximum size",
            pool_max.clone(),
        );
        let ingest_batch = Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]);
        registry.register(
            "ingest_batch_webhooks",
            "Webhooks stored by each committed webhook transaction (group commit)",
            ingest_batch.clone(),
        );
        let ingest_split = Counter::default();
        registry.register(
            "ingest_batches_split",
            "Webhook batches that failed together and were stored again one by one",
            ingest_split.clone(),
        );
        Arc::new(Self {
            registry,
            ingest_batch,
            ingest_split,
            requests,
            latency,
            pool_size,
            pool_idle,
            pool_max,
        })
    }

    /// Render the text exposition format, reading the pool gauges now.
    pub fn render(&self, pool: &sqlx::PgPool) -> String {
        self.pool_size.set(i64::from(pool.size()));
        self.pool_idle
            .set(i64::try_from(pool.num_idle()).unwrap_or(i64::MAX));
        self.pool_max
            .set(i64::from(pool.options().get_max_connections()));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Middleware recording each request's route, status and latency.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    // Any token is a valid method name to hyper: made-up ones are counted together, so
    // that no client can grow the label set (200k invented methods once added 196 MB).
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m,
        _ => "other",
    }
    .to_owned();
    // Unmatched paths are grouped so a scanner cannot blow up the label set.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let res = next.run(req).await;
    let status = res.status().as_u16();
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method: method.clone(),
            route: route.clone(),
            status,
        })
        .inc();
    state
        .metrics
        .latency
        .get_or_create(&RouteLabels { method, route })
        .observe(start.elapsed().as_secs_f64());
    res
}
