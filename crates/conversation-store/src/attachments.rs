//! Attachments: image files checked by their bytes, stored content-addressed (identical
//! files of a tenant are stored once) behind a small [`BlobStore`] trait: in PostgreSQL by
//! default ([`PgBlobStore`]), so every replica serves every file and backups take them
//! along; an S3-compatible store could be another implementation.

use std::{future::Future, io, path::PathBuf, pin::Pin};

use chrono::{DateTime, Utc};
use parley_core::{AttachmentId, TenantId, UserId};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::StoreError;

/// The largest image accepted (WhatsApp's limit).
pub const MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;

/// The most pixels an image may declare: a small file can claim a vast canvas (a
/// "decompression bomb") that any client drawing it must allocate.
pub const MAX_IMAGE_PIXELS: u64 = 40_000_000;

/// A boxed future, for the object-safe storage trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where attachment bytes live, addressed by their tenant and SHA-256.
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Store `bytes` under `sha256` (a no-op when already there).
    fn put<'a>(
        &'a self,
        tenant: TenantId,
        sha256: &'a str,
        bytes: &'a [u8],
    ) -> BoxFuture<'a, io::Result<()>>;
    /// Read the bytes stored under `sha256`.
    fn get<'a>(&'a self, tenant: TenantId, sha256: &'a str) -> BoxFuture<'a, io::Result<Vec<u8>>>;
}

/// Bytes in the `blobs` table, per tenant and SHA-256. Files an earlier version wrote to
/// `legacy` (a directory) are read from there when the table lacks them, and copied in.
#[derive(Debug, Clone)]
pub struct PgBlobStore {
    db: sqlx::PgPool,
    legacy: Option<FsBlobStore>,
}

impl PgBlobStore {
    /// A store on `db`, reading files missing from it from `legacy`.
    pub fn new(db: sqlx::PgPool, legacy: Option<FsBlobStore>) -> Self {
        Self { db, legacy }
    }
}

fn io_err(e: sqlx::Error) -> io::Error {
    io::Error::other(e)
}

impl BlobStore for PgBlobStore {
    fn put<'a>(
        &'a self,
        tenant: TenantId,
        sha256: &'a str,
        bytes: &'a [u8],
    ) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            check_sha(sha256)?;
            sqlx::query(
                "INSERT INTO blobs (tenant_id, sha256, bytes) VALUES ($1, $2, $3)
                 ON CONFLICT (tenant_id, sha256) DO NOTHING",
            )
            .bind(tenant.0)
            .bind(sha256)
            .bind(bytes)
            .execute(&self.db)
            .await
            .map_err(io_err)?;
            Ok(())
        })
    }

    fn get<'a>(&'a self, tenant: TenantId, sha256: &'a str) -> BoxFuture<'a, io::Result<Vec<u8>>> {
        Box::pin(async move {
            check_sha(sha256)?;
            let found: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT bytes FROM blobs WHERE tenant_id = $1 AND sha256 = $2")
                    .bind(tenant.0)
                    .bind(sha256)
                    .fetch_optional(&self.db)
                    .await
                    .map_err(io_err)?;
            if let Some(bytes) = found {
                return Ok(bytes);
            }
            let Some(legacy) = &self.legacy else {
                return Err(io::Error::new(io::ErrorKind::NotFound, "no such file"));
            };
            let bytes = legacy.get(tenant, sha256).await?;
            self.put(tenant, sha256, &bytes).await?;
            Ok(bytes)
        })
    }
}

/// Delete a tenant's stored bytes that no attachment refers to any more (after an
/// erasure). Returns how many files went.
pub async fn delete_unreferenced(
    conn: &mut PgConnection,
    tenant: TenantId,
    sha256s: &[String],
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "DELETE FROM blobs b WHERE b.tenant_id = $1 AND b.sha256 = ANY($2)
           AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.tenant_id = $1 AND a.sha256 = b.sha256)",
    )
    .bind(tenant.0)
    .bind(sha256s)
    .execute(conn)
    .await?
    .rows_affected())
}

fn check_sha(sha256: &str) -> io::Result<()> {
    if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a sha256"));
    }
    Ok(())
}

/// Files under a directory: `<root>/<first two hex>/<sha256>`.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, sha256: &str) -> io::Result<PathBuf> {
        check_sha(sha256)?;
        Ok(self.root.join(&sha256[..2]).join(sha256))
    }
}

/// Files on one disk: what earlier versions used (one replica's files, unseen by the
/// others); kept for reading those files and for tools.
impl BlobStore for FsBlobStore {
    fn put<'a>(
        &'a self,
        _tenant: TenantId,
        sha256: &'a str,
        bytes: &'a [u8],
    ) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let path = self.path(sha256)?;
            if tokio::fs::try_exists(&path).await.unwrap_or(false) {
                return Ok(());
            }
            let dir = path.parent().map(PathBuf::from).unwrap_or_default();
            tokio::fs::create_dir_all(&dir).await?;
            // Write to a temporary name, then rename: a crash never leaves a torn file
            // under the final name.
            let tmp = dir.join(format!(".{sha256}.{}.tmp", Uuid::new_v4()));
            tokio::fs::write(&tmp, bytes).await?;
            let file = tokio::fs::File::open(&tmp).await?;
            file.sync_all().await?;
            tokio::fs::rename(&tmp, &path).await
        })
    }

    fn get<'a>(&'a self, _tenant: TenantId, sha256: &'a str) -> BoxFuture<'a, io::Result<Vec<u8>>> {
        Box::pin(async move { tokio::fs::read(self.path(sha256)?).await })
    }
}

/// What an uploaded file turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// `image/jpeg`, `image/png` or `image/webp`.
    pub mime_type: &'static str,
    /// Pixels.
    pub width: i32,
    /// Pixels.
    pub height: i32,
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UploadError {
    /// Not JPEG, PNG or WebP by its bytes.
    #[error("the file is not a JPEG, PNG or WebP image (its content was checked, not its name)")]
    UnsupportedType,
    /// Over the limit.
    #[error("the file is larger than 5 MB")]
    TooLarge,
    /// Empty.
    #[error("the file is empty")]
    Empty,
    /// Declares more pixels than [`MAX_IMAGE_PIXELS`].
    #[error("the image declares more than 40 million pixels")]
    TooManyPixels,
}

/// Identify an image by its magic bytes and read its dimensions.
pub fn sniff_image(bytes: &[u8]) -> Result<ImageInfo, UploadError> {
    if bytes.is_empty() {
        return Err(UploadError::Empty);
    }
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(UploadError::TooLarge);
    }
    let mime_type = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        "image/jpeg"
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        "image/webp"
    } else {
        return Err(UploadError::UnsupportedType);
    };
    let size = imagesize::blob_size(bytes).map_err(|_| UploadError::UnsupportedType)?;
    let pixels = u64::try_from(size.width)
        .unwrap_or(u64::MAX)
        .saturating_mul(u64::try_from(size.height).unwrap_or(u64::MAX));
    if pixels > MAX_IMAGE_PIXELS {
        return Err(UploadError::TooManyPixels);
    }
    Ok(ImageInfo {
        mime_type,
        width: i32::try_from(size.width).map_err(|_| UploadError::UnsupportedType)?,
        height: i32::try_from(size.height).map_err(|_| UploadError::UnsupportedType)?,
    })
}

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A stored attachment's description.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Attachment {
    /// Id.
    pub id: Uuid,
    /// Content type (from the bytes).
    pub mime_type: String,
    /// Bytes.
    pub size: i64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// Pixels, for images.
    pub width: Option<i32>,
    /// Pixels, for images.
    pub height: Option<i32>,
    /// The name it was uploaded with (informational only).
    pub filename: Option<String>,
    /// Uploaded.
    pub created_at: DateTime<Utc>,
}

macro_rules! attachment_columns {
    () => {
        "id, mime_type, size, sha256, width, height, filename, created_at"
    };
}

/// Record an uploaded image whose bytes are already in the blob store.
pub async fn insert(
    conn: &mut PgConnection,
    tenant: TenantId,
    info: &ImageInfo,
    sha256: &str,
    size: usize,
    filename: Option<&str>,
    uploaded_by: Option<UserId>,
) -> Result<Attachment, StoreError> {
    let file = StoredFile {
        mime_type: info.mime_type,
        width: Some(info.width),
        height: Some(info.height),
        sha256,
        size,
        filename,
    };
    insert_file(conn, tenant, &file, uploaded_by).await
}

/// A file already in the blob store, of any type (e.g. media fetched from a provider).
#[derive(Debug, Clone)]
pub struct StoredFile<'a> {
    /// Content type.
    pub mime_type: &'a str,
    /// Pixels, for images.
    pub width: Option<i32>,
    /// Pixels, for images.
    pub height: Option<i32>,
    /// Hex SHA-256 (the blob's address).
    pub sha256: &'a str,
    /// Bytes.
    pub size: usize,
    /// Original name.
    pub filename: Option<&'a str>,
}

/// Record any stored file as an attachment.
pub async fn insert_file(
    conn: &mut PgConnection,
    tenant: TenantId,
    file: &StoredFile<'_>,
    uploaded_by: Option<UserId>,
) -> Result<Attachment, StoreError> {
    Ok(sqlx::query_as::<_, Attachment>(concat!(
        "INSERT INTO attachments (id, tenant_id, sha256, mime_type, size, width, height, filename, uploaded_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ",
        attachment_columns!()
    ))
    .bind(AttachmentId::new().0)
    .bind(tenant.0)
    .bind(file.sha256)
    .bind(file.mime_type)
    .bind(i64::try_from(file.size).unwrap_or(i64::MAX))
    .bind(file.width)
    .bind(file.height)
    .bind(file.filename)
    .bind(uploaded_by.map(|u| u.0))
    .fetch_one(conn)
    .await?)
}

/// One attachment of `tenant`.
pub async fn get(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: AttachmentId,
) -> Result<Option<Attachment>, StoreError> {
    Ok(sqlx::query_as::<_, Attachment>(concat!(
        "SELECT ",
        attachment_columns!(),
        " FROM attachments WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.0)
    .bind(id.0)
    .fetch_optional(conn)
    .await?)
}

/// Attach a stored attachment to a message (after the fact, e.g. once provider media is
/// fetched) and tell desktops with a `message.updated` event.
pub async fn link_to_message(
    conn: &mut PgConnection,
    tenant: TenantId,
    message_id: Uuid,
    attachment: &Attachment,
) -> Result<(), StoreError> {
    let contact: Option<Uuid> =
        sqlx::query_scalar("SELECT contact_id FROM messages WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.0)
            .bind(message_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(contact) = contact else {
        return Err(StoreError::NotFound("message"));
    };
    sqlx::query(
        "INSERT INTO message_attachments (message_id, attachment_id, tenant_id, position)
         VALUES ($1, $2, $3, (SELECT count(*)::int FROM message_attachments WHERE message_id = $1))",
    )
    .bind(message_id)
    .bind(attachment.id)
    .bind(tenant.0)
    .execute(&mut *conn)
    .await?;
    crate::events::append(
        conn,
        tenant,
        crate::events::Audience::Tenant,
        "message.updated",
        &serde_json::json!({ "message_id": message_id, "contact_id": contact, "attachment": attachment }),
    )
    .await?;
    Ok(())
}

/// Bytes a tenant's uploaded files take (each upload counted, as the quota sees it).
pub async fn tenant_usage(conn: &mut PgConnection, tenant: TenantId) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE(sum(size), 0)::bigint FROM attachments WHERE tenant_id = $1 AND uploaded_by IS NOT NULL",
    )
    .bind(tenant.0)
    .fetch_one(conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A 1×1 PNG.
    const PNG: &[u8] = &[
        0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F,
        0x15, 0xC4, 0x89, 0x00, 0x00, 0x00, 0x0A, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00,
        0x01, 0x00, 0x00, 0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00, 0x00, 0x00, 0x49,
        0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
    ];

    #[test]
    fn images_are_known_by_their_bytes() {
        assert_eq!(
            sniff_image(PNG),
            Ok(ImageInfo {
                mime_type: "image/png",
                width: 1,
                height: 1
            })
        );
        assert_eq!(
            sniff_image(b"hello, I am text"),
            Err(UploadError::UnsupportedType)
        );
        assert_eq!(sniff_image(b""), Err(UploadError::Empty));
        assert_eq!(
            sniff_image(&vec![0xFF; MAX_IMAGE_BYTES + 1]),
            Err(UploadError::TooLarge)
        );
        // A JPEG header with nothing after it has no dimensions.
        assert_eq!(
            sniff_image(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Err(UploadError::UnsupportedType)
        );
    }
}
