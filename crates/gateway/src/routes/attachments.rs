//! Image uploads and downloads.

use axum::{
    body::Body,
    extract::{DefaultBodyLimit, Multipart, State},
    http::{StatusCode, header},
    response::Response,
};
use conversation_store::attachments::{self, MAX_IMAGE_BYTES, UploadError};
use parley_core::{AttachmentId, Principal, TenantId};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    app::AppState,
    error::{ApiError, CommonErrors},
    events::SlotKey,
    extract::ApiPath,
    routes::messages::AttachmentOut,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_attachment))
        .routes(routes!(download_attachment))
        // Room for a 5 MB image plus the multipart framing; the size is checked exactly
        // below.
        .layer(DefaultBodyLimit::max(MAX_IMAGE_BYTES + 64 * 1024))
}

/// The multipart form.
#[derive(Debug, ToSchema)]
#[expect(dead_code, reason = "documents the multipart form")]
pub struct UploadForm {
    /// The image (JPEG, PNG or WebP; at most 5 MB). Its type is read from its bytes.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// An attachment id in the path.
#[derive(Debug, Deserialize, IntoParams)]
pub struct AttachmentPath {
    /// The attachment's id.
    pub attachment_id: Uuid,
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "images may be at most 5 MB (WhatsApp's limit)",
    )
}

/// Upload an image (multipart field `file`).
#[utoipa::path(post, path = "/attachments", tag = "attachments", security(("bearer" = [])),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored", body = AttachmentOut),
        (status = 413, description = "Larger than 5 MB", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not a JPEG, PNG or WebP image", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The user has too many uploads in progress (`too_many_uploads`)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 507, description = "The tenant's storage quota is used up (`storage_quota_exceeded`)", body = crate::error::Problem, content_type = "application/problem+json"),
        CommonErrors,
    ))]
pub async fn upload_attachment(
    State(state): State<AppState>,
    principal: Principal,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<(StatusCode, axum::Json<AttachmentOut>), ApiError> {
    let mut multipart = multipart.map_err(|e| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "the body must be multipart/form-data with a `file` field: {}",
                e.body_text()
            ),
        )
    })?;
    // A few uploads per user at a time, and a bounded number read at once on this
    // process (each holds up to 5 MB): 400 concurrent uploads once took 1.24 GB.
    let _mine = state
        .sockets
        .take(
            SlotKey::UploadsBy(principal.user_id.0),
            state.config.uploads_per_user,
        )
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_uploads",
                format!(
                    "you already have {} uploads in progress; wait for one to finish",
                    state.config.uploads_per_user
                ),
            )
        })?;
    let _turn = state
        .uploads
        .acquire()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut file: Option<(Vec<u8>, Option<String>)> = None;
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
            Err(e) => return Err(ApiError::bad_request("invalid_multipart", e.body_text())),
        };
        if field.name() != Some("file") {
            continue;
        }
        let filename = field.file_name().map(|f| {
            f.chars()
                .filter(|c| *c != '\0')
                .take(255)
                .collect::<String>()
        });
        // Read as it arrives, refusing as soon as it is too large.
        let mut bytes: Vec<u8> = Vec::new();
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > MAX_IMAGE_BYTES {
                        return Err(too_large());
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
                Err(e) => return Err(ApiError::bad_request("invalid_multipart", e.body_text())),
            }
        }
        file = Some((bytes, filename));
    }
    let Some((bytes, filename)) = file else {
        return Err(ApiError::invalid_field(
            "file",
            "a multipart field named `file` is required",
        ));
    };
    let info = attachments::sniff_image(&bytes).map_err(|e| match e {
        UploadError::TooLarge => too_large(),
        UploadError::Empty => ApiError::invalid_field("file", "the file is empty"),
        UploadError::TooManyPixels => ApiError::invalid_field(
            "file",
            "the image declares more than 40 million pixels; resize it",
        ),
        UploadError::UnsupportedType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "only JPEG, PNG and WebP images are accepted; the file's content is not one of them",
        ),
    })?;
    {
        let mut conn = state.db.acquire().await?;
        let used = attachments::tenant_usage(&mut conn, principal.tenant_id).await?;
        let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        if used.saturating_add(size) > state.config.tenant_storage_bytes {
            return Err(ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_quota_exceeded",
                format!(
                    "the organisation's uploads take {} MB of its {} MB; an administrator can free space or raise PARLEY_TENANT_STORAGE_MB",
                    used / (1024 * 1024),
                    state.config.tenant_storage_bytes / (1024 * 1024)
                ),
            ));
        }
    }
    let sha = attachments::sha256_hex(&bytes);
    state
        .blobs
        .put(principal.tenant_id, &sha, &bytes)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "attachment storage failed");
            ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_unavailable",
                "the attachment could not be stored; try again later",
            )
        })?;
    let mut conn = state.db.acquire().await?;
    let stored = attachments::insert(
        &mut conn,
        principal.tenant_id,
        &info,
        &sha,
        bytes.len(),
        filename.as_deref(),
        Some(principal.user_id),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(stored.into())))
}

/// Download an attachment (users of the same tenant only).
#[utoipa::path(get, path = "/attachments/{attachment_id}", tag = "attachments", security(("bearer" = [])),
    params(AttachmentPath),
    responses(
        (status = 200, description = "The file, with its content type", content(
            (Vec<u8> = "image/jpeg"), (Vec<u8> = "image/png"), (Vec<u8> = "image/webp"))),
        (status = 404, description = "No such attachment in this tenant", body = crate::error::Problem, content_type = "application/problem+json"),
        CommonErrors,
    ))]
pub async fn download_attachment(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(path): ApiPath<AttachmentPath>,
) -> Result<Response, ApiError> {
    serve(
        &state,
        principal.tenant_id,
        AttachmentId(path.attachment_id),
    )
    .await
}

/// Attachment `id` of `tenant` as a response: its bytes, a type a browser cannot run,
/// and a safe file name.
pub(crate) async fn serve(
    state: &AppState,
    tenant: TenantId,
    id: AttachmentId,
) -> Result<Response, ApiError> {
    let mut conn = state.db.acquire().await?;
    let meta = attachments::get(&mut conn, tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found("attachment"))?;
    drop(conn);
    let bytes = state.blobs.get(tenant, &meta.sha256).await.map_err(|e| {
        tracing::error!(error = %e, attachment = %meta.id, "attachment bytes missing");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "the attachment's bytes could not be read",
        )
    })?;
    // A safe name: no path, no quotes or control characters (the original, percent-encoded,
    // in filename*).
    let original = meta.filename.as_deref().unwrap_or("attachment");
    let base = original.rsplit(['/', '\\']).next().unwrap_or("attachment");
    let ascii: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let ascii = if ascii.trim_matches('.').is_empty() {
        "attachment".to_owned()
    } else {
        ascii
    };
    let encoded: String = base
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let (content_type, disposition) = served_as(&meta.mime_type);
    Response::builder()
        .header(
            header::CONTENT_DISPOSITION,
            format!("{disposition}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"),
        )
        .header(header::CONTENT_TYPE, content_type)
        // Whatever it is, it runs nothing in this origin if a browser opens it anyway.
        .header(
            header::CONTENT_SECURITY_POLICY,
            "sandbox; default-src 'none'; img-src 'self'; media-src 'self'",
        )
        .header(header::CONTENT_LENGTH, bytes.len())
        .header(header::CACHE_CONTROL, "private, max-age=86400, immutable")
        .header("x-content-type-options", "nosniff")
        .body(Body::from(bytes))
        .map_err(|e| ApiError::internal(&e))
}

/// How a stored file of `mime` type is served from the API's own origin (where the agent
/// console runs with the agent's session): the raster image types a browser only ever
/// shows as pictures inline; audio, video and PDF as downloads of their type; anything
/// else (HTML, SVG, XML, scripts, unknown types a contact may send as a "document") as an
/// opaque download, so nothing a contact sends can run as a page here.
pub fn served_as(mime: &str) -> (&str, &'static str) {
    let essence = mime
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "image/jpeg" | "image/png" | "image/gif" | "image/webp" => (mime, "inline"),
        "application/pdf" => (mime, "attachment"),
        t if (t.starts_with("audio/") || t.starts_with("video/")) && !t.contains("xml") => {
            (mime, "attachment")
        }
        _ => ("application/octet-stream", "attachment"),
    }
}

#[cfg(test)]
mod tests {
    use super::served_as;

    #[test]
    fn only_raster_images_are_inline_and_markup_is_opaque() {
        assert_eq!(served_as("image/png"), ("image/png", "inline"));
        assert_eq!(served_as("IMAGE/JPEG"), ("IMAGE/JPEG", "inline"));
        assert_eq!(served_as("audio/ogg; codecs=opus").1, "attachment");
        for risky in [
            "text/html",
            "TEXT/HTML; charset=utf-8",
            "image/svg+xml",
            "application/xhtml+xml",
            "text/javascript",
            "application/octet-stream",
            "video/x-ms-asf+xml",
            "",
        ] {
            assert_eq!(
                served_as(risky),
                ("application/octet-stream", "attachment"),
                "{risky}"
            );
        }
    }
}
