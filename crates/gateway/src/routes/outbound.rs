//! `POST /contacts/{id}/messages`: an agent's message to a contact (the use case is
//! `services::outbound`).

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
};
use parley_core::{ContactId, Principal};
use serde_json::Value;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(crate) use crate::services::outbound::{Queued, SendIn, queue};
use crate::{
    app::AppState,
    error::{ApiError, CommonErrors},
    extract::{ApiJson, ApiPath},
    routes::{contacts::ContactPath, messages::MessageOut},
    services::outbound,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(send_message))
}

/// Send a message to the contact over WhatsApp. Refused up front (422
/// `whatsapp_window_closed`) outside the 24-hour window. Repeat the same
/// `Idempotency-Key` to retry safely.
#[utoipa::path(post, path = "/contacts/{contact_id}/messages", tag = "contacts", security(("bearer" = [])),
    params(ContactPath, ("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request act once")),
    request_body = SendIn,
    responses(
        (status = 202, description = "Queued for delivery", body = MessageOut),
        (status = 404, description = "No such contact in this tenant", body = crate::error::Problem, content_type = "application/problem+json"),
        CommonErrors,
    ))]
pub async fn send_message(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(path): ApiPath<ContactPath>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<SendIn>,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let key = idempotency_key(&headers)?;
    let (status, body) = outbound::send(
        &state,
        principal,
        ContactId(path.contact_id),
        None,
        key,
        input,
    )
    .await?;
    Ok((status, axum::Json(body)))
}

/// The `Idempotency-Key` header, checked.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_owned))
        .transpose()
        .map_err(|_| ApiError::bad_request("invalid_header", "Idempotency-Key must be ASCII"))?;
    if key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 255) {
        return Err(ApiError::bad_request(
            "invalid_header",
            "Idempotency-Key must be 1 to 255 characters",
        ));
    }
    Ok(key)
}
