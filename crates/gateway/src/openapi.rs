//! The OpenAPI document: generated from the routes, committed as `openapi.yaml`, and
//! compared in a test.

use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Parley",
        description = "The chat side of a contact center: contacts, conversations, routing, \
                       agent events and WhatsApp. Errors are RFC 9457 problem+json documents \
                       with a stable `code`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&Security),
    tags(
        (name = "auth", description = "Log in and who am I"),
        (name = "users", description = "A tenant's agents, supervisors and admins"),
        (name = "contacts", description = "The contact directory, transcripts and read marks"),
        (name = "conversations", description = "The Communication tab and tenant-wide search"),
        (name = "attachments", description = "Image uploads and downloads"),
        (name = "channels", description = "Channel accounts (WhatsApp numbers) and their dead letters"),
        (name = "webhooks", description = "Provider webhooks (signed by the provider)"),
        (name = "routing", description = "Agent states, offers and the interaction lifecycle"),
        (name = "events", description = "The agent event stream (WebSocket)"),
        (name = "platform", description = "Provisioning tenants (enabled by PARLEY_PLATFORM_TOKEN)"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An access token from POST /api/v1/auth/login"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "platform_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The operator's PARLEY_PLATFORM_TOKEN"))
                    .build(),
            ),
        );
    }
}

/// The document's fixed parts (info, security schemes, tags).
pub fn base() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The whole document as YAML.
pub fn yaml() -> Result<String, String> {
    crate::app::api_router()
        .into_openapi()
        .to_yaml()
        .map_err(|e| e.to_string())
}
