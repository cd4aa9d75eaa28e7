//! Liveness, readiness, metrics and the OpenAPI document.

use std::{sync::OnceLock, time::Duration};

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{app::AppState, error::ApiError};

/// Health answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthOut {
    /// `ok` or `ready`.
    pub status: &'static str,
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up", body = HealthOut)))]
pub async fn healthz() -> axum::Json<HealthOut> {
    axum::Json(HealthOut { status: "ok" })
}

/// The database is reachable.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", body = HealthOut),
        (status = 503, description = "The database is unreachable", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<axum::Json<HealthOut>, ApiError> {
    let probe = async {
        let mut conn = state.db.acquire().await?;
        conversation_store::ping(&mut conn).await?;
        Ok::<_, sqlx::Error>(())
    };
    match tokio::time::timeout(Duration::from_secs(3), probe).await {
        Ok(Ok(())) => Ok(axum::Json(HealthOut { status: "ready" })),
        Ok(Err(e)) => Err(ApiError::unavailable(&e)),
        Err(e) => Err(ApiError::unavailable(&e)),
    }
}

/// Prometheus metrics in the text exposition format. With `PARLEY_METRICS_LISTEN` set,
/// served on that address only (404 here).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "OpenMetrics text format", body = String, content_type = "application/openmetrics-text"),
        (status = 404, description = "Served on `PARLEY_METRICS_LISTEN` instead", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    if state.config.metrics_listen.is_some() {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint; see /openapi.yaml",
        )
        .into_response();
    }
    metrics_text(&state).into_response()
}

/// The metrics listener's one route.
pub async fn metrics_only(State(state): State<AppState>) -> impl IntoResponse {
    metrics_text(&state)
}

fn metrics_text(state: &AppState) -> impl IntoResponse + use<> {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(&state.db),
    )
}

/// The OpenAPI document (the same as the repository's `openapi.yaml`).
pub async fn openapi_yaml() -> impl IntoResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(|| crate::openapi::yaml().unwrap_or_default());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/yaml")],
        doc.as_str(),
    )
}
