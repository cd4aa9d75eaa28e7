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
    let mut doc = crate::app::api_router().into_openapi();
    document_common_failures(&mut doc);
    doc.to_yaml().map_err(|e| e.to_string())
}

/// Answers that come from the shared extractors and middleware rather than from each
/// handler, documented on every operation they can reach: 401 wherever a bearer token is
/// required, 413 and 415 wherever a JSON body is read, 404 wherever the path names an
/// object. Each is a problem+json document.
fn document_common_failures(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            if !op.responses.responses.contains_key("400") {
                continue;
            }
            let bearer =
                path.starts_with("/api/") && op.security.as_ref().is_some_and(|s| !s.is_empty());
            let platform = path.starts_with("/platform/");
            let json_body = matches!(&op.request_body, Some(RefOr::T(b)) if b.content.contains_key("application/json"));
            let names_object = path.starts_with("/api/") && path.contains('{');
            let mut add = |status: &str, description: &str| {
                op.responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| {
                        RefOr::T(
                            ResponseBuilder::new()
                                .description(description)
                                .content(
                                    "application/problem+json",
                                    ContentBuilder::new()
                                        .schema(Some(Ref::from_schema_name("Problem")))
                                        .build(),
                                )
                                .build(),
                        )
                    });
            };
            if bearer {
                add(
                    "401",
                    "No valid access token (`missing_token`, `invalid_token`, `token_expired`)",
                );
            }
            if platform {
                add("401", "No valid platform token");
            }
            if json_body {
                add(
                    "413",
                    "The body is larger than the server accepts (`payload_too_large`)",
                );
                add(
                    "415",
                    "The body is not `application/json` (`unsupported_media_type`)",
                );
            }
            if names_object {
                add("404", "No such object in this tenant (`not_found`)");
            }
        }
    }
}
