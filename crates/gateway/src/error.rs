//! One error type for every HTTP answer that is not a success: RFC 9457
//! `application/problem+json` with a stable machine-readable `code`.
//!
//! A 5xx body never carries internal text; its cause is logged once, here.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use conversation_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// The problem document every error response carries.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type (`urn:parley:problem:<code>`).
    #[serde(rename = "type")]
    pub type_: String,
    /// A short, human-readable summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this occurrence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Stable machine-readable code, e.g. `validation_failed`, `invalid_token`.
    pub code: String,
    /// For input errors: each offending field and what is wrong with it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// For a conflict: the id of the existing object the request collided with (e.g. the
    /// contact that already owns an address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existing_id: Option<uuid::Uuid>,
    /// For `whatsapp_window_closed`: when the 24-hour customer-service window closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_closed_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One invalid input field.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    /// The field's path in the request, e.g. `email` or `skills[2]`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: Option<String>,
    errors: Vec<FieldError>,
    retry_after: Option<i64>,
    www_authenticate: bool,
    existing_id: Option<uuid::Uuid>,
    window_closed_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl ApiError {
    /// An error with a status, a code and a detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: Some(detail.into()),
            errors: Vec::new(),
            retry_after: None,
            www_authenticate: false,
            existing_id: None,
            window_closed_at: None,
        }
    }

    /// 422: one field is invalid.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::invalid_fields(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    /// 422: several fields are invalid.
    pub fn invalid_fields(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            errors,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                detail,
            )
        }
    }

    /// 400 for a request that cannot be read at all.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 401 with a `WWW-Authenticate: Bearer` challenge.
    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            www_authenticate: true,
            ..Self::new(StatusCode::UNAUTHORIZED, code, detail)
        }
    }

    /// 403: authenticated but not allowed.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 404 for `what` (which may simply belong to another tenant).
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 409 naming the field that collided.
    pub fn conflict(field: &str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Self {
            errors: vec![FieldError {
                field: field.to_owned(),
                message: detail.clone(),
            }],
            ..Self::new(StatusCode::CONFLICT, "conflict", detail)
        }
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(detail: impl Into<String>, retry_after_secs: i64) -> Self {
        Self {
            retry_after: Some(retry_after_secs),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail)
        }
    }

    /// 500; `cause` is logged, never sent.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        let mut chain = cause.to_string();
        let mut src = cause.source();
        while let Some(s) = src {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            src = s.source();
        }
        tracing::error!(cause = %chain, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred; it has been logged",
        )
    }

    /// 503: the database (or another dependency) is unavailable.
    pub fn unavailable(cause: &(dyn std::error::Error + 'static)) -> Self {
        tracing::warn!(cause = %cause, "dependency unavailable");
        Self {
            retry_after: Some(5),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the service is temporarily unavailable; retry shortly",
            )
        }
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// 422 `whatsapp_window_closed`: free-form messages are refused outside the window.
    pub fn window_closed(closed_at: Option<chrono::DateTime<chrono::Utc>>) -> Self {
        Self {
            window_closed_at: closed_at,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "whatsapp_window_closed",
                "the contact has not written in the last 24 hours, so WhatsApp only allows a notification template; send a template instead",
            )
        }
    }

    /// The names of the fields at fault.
    pub fn fields(&self) -> Vec<String> {
        self.errors.iter().map(|e| e.field.clone()).collect()
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    fn title(&self) -> String {
        self.status.canonical_reason().unwrap_or("Error").to_owned()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            type_: format!("urn:parley:problem:{}", self.code),
            title: self.title(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_owned(),
            errors: self.errors.clone(),
            existing_id: self.existing_id,
            window_closed_at: self.window_closed_at,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut res = (self.status, body).into_response();
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            headers.insert(header::RETRY_AFTER, v);
        }
        if self.www_authenticate {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"parley\""),
            );
        }
        res
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { field, .. } => {
                ApiError::conflict(field, format!("{field} is already taken"))
            }
            StoreError::IdentityTaken { owner, .. } => {
                let mut e = ApiError::conflict(
                    "address",
                    format!("this address already belongs to contact {owner}"),
                );
                e.existing_id = Some(owner);
                e
            }
            StoreError::Invalid { field, message } => ApiError::invalid_field(field, message),
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::MissingReference { field } => {
                ApiError::invalid_field(field, "refers to something that does not exist")
            }
            StoreError::Database(db) => ApiError::from(db),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => ApiError::unavailable(&e),
            // The server went away under us: shutting down, restarting, refusing new
            // sessions (SQLSTATE class 57, operator intervention) or a broken connection
            // (class 08). The client should retry, as after a pool timeout.
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("57") || c.starts_with("08")) =>
            {
                ApiError::unavailable(&e)
            }
            // Text the database cannot store that slipped past the extractors' checks.
            sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("22021" | "22P05")) =>
            {
                ApiError::bad_request(
                    "invalid_text",
                    "the request carries text the database cannot store (such as a NUL character)",
                )
            }
            _ => ApiError::internal(&e),
        }
    }
}

/// The `4XX`/`5XX` responses every operation documents.
#[derive(utoipa::IntoResponses)]
pub enum CommonErrors {
    /// The request is malformed (unreadable JSON, bad path or query parameter).
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(#[to_schema] Problem),
    /// A field is invalid; `errors` names each.
    #[response(status = 422, content_type = "application/problem+json")]
    Unprocessable(Problem),
    /// An unexpected failure; the cause is logged, not returned.
    #[response(status = 500, content_type = "application/problem+json")]
    Internal(Problem),
    /// The database is unreachable; retry after the `Retry-After` delay.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// The 403 of an operation only admins may call.
#[derive(utoipa::IntoResponses)]
pub enum AdminOnly {
    /// Not an admin (`code: forbidden`).
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
}

/// The 403 of an operation only supervisors and admins may call.
#[derive(utoipa::IntoResponses)]
pub enum SupervisorOnly {
    /// Not a supervisor or admin (`code: forbidden`).
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
}

/// The 403 of an operation on an interaction that belongs to another agent.
#[derive(utoipa::IntoResponses)]
pub enum NotYours {
    /// The interaction (or its offer) belongs to another agent (`code: forbidden`).
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
}
