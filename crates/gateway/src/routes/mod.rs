//! HTTP resources, one module each, merged under `/api/v1`.

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

pub mod attachments;
pub mod auth;
pub mod channel_accounts;
pub mod connect;
pub mod contacts;
pub mod health;
pub mod interactions;
pub mod messages;
pub mod outbound;
pub mod platform;
pub mod queues;
pub mod sms;
pub mod templates;
pub mod users;
pub mod webhooks;

/// Everything under `/api/v1`.
pub fn v1() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(auth::router())
        .merge(users::router())
        .merge(contacts::router())
        .merge(messages::router())
        .merge(attachments::router())
        .merge(outbound::router())
        .merge(channel_accounts::router())
        .merge(connect::router())
        .merge(interactions::router())
        .merge(queues::router())
        .merge(templates::router())
        .merge(sms::router())
        .routes(utoipa_axum::routes!(crate::events::events_ws))
}
