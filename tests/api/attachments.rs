//! Image uploads: type from the bytes, 5 MB limit, content-addressed storage, tenant
//! isolation.

use conversation_store::messages::{self, Direction, NewMessage};
use parley_core::{AttachmentId, channel::Channel};
use reqwest::{StatusCode, multipart};
use serde_json::json;
use test_support::{Reply, TestApp, read_reply, spawn_app, spawn_app_with};

/// A 1×1 PNG.
pub(crate) const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0A, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE,
    0x42, 0x60, 0x82,
];

pub(crate) async fn upload(
    app: &TestApp,
    token: &str,
    bytes: Vec<u8>,
    name: &str,
    mime: &str,
) -> Reply {
    let part = multipart::Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str(mime)
        .expect("mime");
    let form = multipart::Form::new().part("file", part);
    let res = app
        .client
        .post(app.url("/api/v1/attachments"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .expect("send");
    read_reply(res).await
}

#[tokio::test]
async fn a_png_named_jpg_is_stored_as_png_and_streams_back() {
    let app = spawn_app().await;
    let r = upload(
        &app,
        &app.agent.token,
        PNG.to_vec(),
        "photo.jpg",
        "image/jpeg",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["mime_type"], "image/png");
    assert_eq!(r.json["width"], 1);
    assert_eq!(r.json["height"], 1);
    assert_eq!(r.json["size"], PNG.len());
    assert_eq!(r.json["filename"], "photo.jpg");
    let id = r.json["id"].as_str().expect("id");
    let res = app
        .client
        .get(app.url(&format!("/api/v1/attachments/{id}")))
        .bearer_auth(&app.agent.token)
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_eq!(res.bytes().await.expect("bytes").as_ref(), PNG);
}

#[tokio::test]
async fn text_renamed_png_is_refused_with_415() {
    let app = spawn_app().await;
    let r = upload(
        &app,
        &app.agent.token,
        b"just some text, honest".to_vec(),
        "cat.png",
        "image/png",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.text);
    assert_eq!(r.content_type(), "application/problem+json");
    assert!(
        r.json["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("JPEG, PNG and WebP")
    );
}

#[tokio::test]
async fn images_over_5_mb_are_refused_with_413() {
    let app = spawn_app().await;
    let mut big = PNG.to_vec();
    big.resize(5 * 1024 * 1024 + 1, 0);
    let r = upload(&app, &app.agent.token, big, "huge.png", "image/png").await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    assert_eq!(r.code(), "payload_too_large");
    // Exactly 5 MB is fine.
    let mut max = PNG.to_vec();
    max.resize(5 * 1024 * 1024, 0);
    let r = upload(&app, &app.agent.token, max, "max.png", "image/png").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn a_missing_file_field_is_422() {
    let app = spawn_app().await;
    let form = multipart::Form::new().text("note", "no file here");
    let res = app
        .client
        .post(app.url("/api/v1/attachments"))
        .bearer_auth(&app.agent.token)
        .multipart(form)
        .send()
        .await
        .expect("send");
    let r = read_reply(res).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["errors"][0]["field"], "file");
}

#[tokio::test]
async fn identical_uploads_are_stored_once() {
    let app = spawn_app().await;
    let a = upload(&app, &app.agent.token, PNG.to_vec(), "a.png", "image/png").await;
    let b = upload(&app, &app.admin.token, PNG.to_vec(), "b.png", "image/png").await;
    assert_ne!(a.json["id"], b.json["id"]);
    assert_eq!(a.json["sha256"], b.json["sha256"]);
    // One stored file (files live in the database: `blobs`).
    let files: i64 = sqlx::query_scalar("SELECT count(*) FROM blobs WHERE tenant_id = $1")
        .bind(app.tenant.0)
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(files, 1);
}

#[tokio::test]
async fn attachments_of_another_tenant_are_404() {
    let app = spawn_app().await;
    let (_, [_, _, b_agent]) = app.other_tenant().await;
    let r = upload(&app, &b_agent.token, PNG.to_vec(), "b.png", "image/png").await;
    let id = r.json["id"].as_str().expect("id");
    let r = app
        .get(&format!("/api/v1/attachments/{id}"), &app.agent.token)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Nor can one tenant's message carry another tenant's attachment.
    let c = app.inbound("+14155552671", "hi").await;
    let mut conn = app.db.acquire().await.expect("conn");
    let err = messages::insert(
        &mut conn,
        app.tenant,
        &NewMessage {
            contact_id: c.contact_id,
            interaction_id: None,
            channel: Channel::Whatsapp,
            direction: Direction::Outbound,
            sender_user_id: Some(app.agent.id),
            kind: "image".into(),
            body: None,
            payload: json!({}),
            channel_account_id: None,
            provider_message_id: None,
            reply_to_id: None,
            status: "queued".into(),
            attachment_ids: vec![AttachmentId(id.parse().expect("uuid"))],
        },
    )
    .await;
    assert!(err.is_err());
}

#[tokio::test]
async fn transcripts_list_a_message_s_attachments() {
    let app = spawn_app().await;
    let up = upload(&app, &app.agent.token, PNG.to_vec(), "p.png", "image/png").await;
    let att: uuid::Uuid = up.json["id"].as_str().expect("id").parse().expect("uuid");
    let c = app.inbound("+14155552671", "here is the photo").await;
    let mut conn = app.db.acquire().await.expect("conn");
    messages::insert(
        &mut conn,
        app.tenant,
        &NewMessage {
            contact_id: c.contact_id,
            interaction_id: None,
            channel: Channel::Whatsapp,
            direction: Direction::Outbound,
            sender_user_id: Some(app.agent.id),
            kind: "image".into(),
            body: None,
            payload: json!({"caption": "the receipt"}),
            channel_account_id: None,
            provider_message_id: None,
            reply_to_id: None,
            status: "queued".into(),
            attachment_ids: vec![AttachmentId(att)],
        },
    )
    .await
    .expect("insert");
    drop(conn);
    let r = app
        .get(
            &format!("/api/v1/contacts/{}/messages", c.contact_id),
            &app.agent.token,
        )
        .await;
    let last = &r.json["items"][1];
    assert_eq!(last["kind"], "image");
    assert_eq!(last["attachments"][0]["id"], att.to_string());
    assert_eq!(last["attachments"][0]["mime_type"], "image/png");
    // The caption is searchable.
    let r = app
        .get("/api/v1/messages/search?q=receipt", &app.agent.token)
        .await;
    assert_eq!(r.json["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn downloads_name_the_file_safely_and_forbid_sniffing() {
    let app = spawn_app().await;
    let r = upload(
        &app,
        &app.agent.token,
        PNG.to_vec(),
        "../../etc/ev'il name;x.png",
        "image/png",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_str().expect("id");
    let res = app
        .client
        .get(app.url(&format!("/api/v1/attachments/{id}")))
        .bearer_auth(&app.agent.token)
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    let cd = res.headers()["content-disposition"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let plain = cd
        .strip_prefix("inline; filename=\"")
        .and_then(|rest| rest.split('"').next())
        .expect("a quoted filename");
    assert!(
        plain.ends_with(".png")
            && !plain.contains('/')
            && !plain.contains(';')
            && !plain.contains('\''),
        "{cd}"
    );
    assert!(cd.contains("filename*=UTF-8''"), "{cd}");
}

#[tokio::test]
async fn files_live_in_the_database_so_every_replica_serves_them() {
    let app = spawn_app().await;
    let r = upload(&app, &app.agent.token, PNG.to_vec(), "a.png", "image/png").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_str().expect("id").to_owned();
    let stored: Vec<u8> = sqlx::query_scalar("SELECT bytes FROM blobs WHERE tenant_id = $1")
        .bind(app.tenant.0)
        .fetch_one(&app.db)
        .await
        .expect("blob");
    assert_eq!(stored, PNG);
    // Nothing on this process's disk.
    let on_disk = walk(&app.data_dir);
    assert!(on_disk.is_empty(), "{on_disk:?}");
    // Another replica serves it.
    let (other, _stop) = test_support::spawn_replica(&app).await;
    let res = app
        .client
        .get(format!("http://{other}/api/v1/attachments/{id}"))
        .bearer_auth(&app.agent.token)
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.expect("bytes").as_ref(), PNG);
}

#[tokio::test]
async fn a_file_an_earlier_version_wrote_to_disk_is_served_and_moved_into_the_database() {
    use conversation_store::attachments::{self, BlobStore as _, FsBlobStore, StoredFile};
    let app = spawn_app().await;
    // As an earlier version stored it: bytes under the attachments directory, a row.
    let sha = attachments::sha256_hex(PNG);
    FsBlobStore::new(app.data_dir.join("attachments"))
        .put(app.tenant, &sha, PNG)
        .await
        .expect("write");
    let mut conn = app.db.acquire().await.expect("conn");
    let att = attachments::insert_file(
        &mut conn,
        app.tenant,
        &StoredFile {
            mime_type: "image/png",
            width: Some(1),
            height: Some(1),
            sha256: &sha,
            size: PNG.len(),
            filename: Some("old.png"),
        },
        None,
    )
    .await
    .expect("row");
    drop(conn);
    let res = app
        .client
        .get(app.url(&format!("/api/v1/attachments/{}", att.id)))
        .bearer_auth(&app.agent.token)
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.expect("bytes").as_ref(), PNG);
    let copied: i64 = sqlx::query_scalar("SELECT count(*) FROM blobs WHERE sha256 = $1")
        .bind(&sha)
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(copied, 1);
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A PNG that declares `w`×`h` pixels, with `pad` bytes of an ancillary chunk.
fn png_declaring(w: u32, h: u32, pad: usize) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
    b.extend_from_slice(&13_u32.to_be_bytes());
    b.extend_from_slice(b"IHDR");
    b.extend_from_slice(&w.to_be_bytes());
    b.extend_from_slice(&h.to_be_bytes());
    b.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    let pad_len = u32::try_from(pad).expect("pad");
    b.extend_from_slice(&pad_len.to_be_bytes());
    b.extend_from_slice(b"tEXt");
    b.extend(std::iter::repeat_n(b'x', pad));
    b.extend_from_slice(&[0, 0, 0, 0]);
    b
}

#[tokio::test]
async fn an_image_declaring_an_absurd_pixel_count_is_refused() {
    let app = spawn_app().await;
    let r = upload(
        &app,
        &app.agent.token,
        png_declaring(100_000, 100_000, 0),
        "bomb.png",
        "image/png",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("pixels"), "{}", r.text);
    let r = upload(
        &app,
        &app.agent.token,
        png_declaring(4000, 3000, 0),
        "photo.png",
        "image/png",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn a_tenants_uploads_stop_at_its_storage_quota() {
    let app = spawn_app_with(&[("PARLEY_TENANT_STORAGE_MB", "1")]).await;
    let r = upload(
        &app,
        &app.agent.token,
        png_declaring(10, 10, 700 * 1024),
        "a.png",
        "image/png",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = upload(
        &app,
        &app.agent.token,
        png_declaring(10, 11, 700 * 1024),
        "b.png",
        "image/png",
    )
    .await;
    assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE, "{}", r.text);
    assert_eq!(r.code(), "storage_quota_exceeded");
    // Another tenant is not affected.
    let (_, [other_admin, ..]) = app.other_tenant().await;
    let r = upload(&app, &other_admin.token, PNG.to_vec(), "c.png", "image/png").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn a_user_may_have_only_so_many_uploads_in_progress() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = spawn_app_with(&[("PARLEY_UPLOADS_PER_USER", "1")]).await;
    // An upload that has sent its headers and the start of its file, and goes on slowly.
    let boundary = "XSLOWX";
    let head = format!(
        "POST /api/v1/attachments HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-type: multipart/form-data; boundary={boundary}\r\ncontent-length: 100000\r\n\r\n\
         --{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"s.png\"\r\n\
         content-type: image/png\r\n\r\n",
        app.agent.token
    );
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(app.addr)
            .await
            .expect("connect");
        s.write_all(head.as_bytes()).await.expect("write");
        s.write_all(&PNG[..8]).await.expect("write");
        s.flush().await.expect("flush");
        slow.push(s);
    }
    // Two at once by the same user: whichever the server reaches second is answered at
    // once with 429, while the other stays in progress (no answer until its body ends).
    let (mut a, mut b) = (slow.remove(0), slow.remove(0));
    let (mut buf_a, mut buf_b) = (vec![0_u8; 4096], vec![0_u8; 4096]);
    let first = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        tokio::select! {
            n = a.read(&mut buf_a) => String::from_utf8_lossy(&buf_a[..n.unwrap_or(0)]).into_owned(),
            n = b.read(&mut buf_b) => String::from_utf8_lossy(&buf_b[..n.unwrap_or(0)]).into_owned(),
        }
    })
    .await
    .expect("neither upload was answered");
    assert!(first.starts_with("HTTP/1.1 429"), "{first}");
    assert!(first.contains("too_many_uploads"), "{first}");
    // Another user is not affected.
    let r = upload(&app, &app.admin.token, PNG.to_vec(), "m.png", "image/png").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // Once it ends (here: the connections drop), the user may upload again.
    drop((a, b));
    let mut taken = false;
    for _ in 0..100 {
        let r = upload(&app, &app.agent.token, PNG.to_vec(), "n.png", "image/png").await;
        if r.status == StatusCode::CREATED {
            taken = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(taken);
}
