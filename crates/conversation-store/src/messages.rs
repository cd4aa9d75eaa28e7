//! Messages: the append-only transcript, its search, unread counts and the Communication
//! tab's list of conversations.

use chrono::{DateTime, Utc};
use parley_core::{
    AttachmentId, ContactId, InteractionId, MessageId, TenantId, UserId,
    channel::{Channel, Media},
    state::MessageStatus,
};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use crate::{
    StoreError,
    attachments::Attachment,
    events::{self, Audience},
    search,
};

/// The longest message body an agent may send, in characters (WhatsApp's limit).
pub const MAX_BODY_CHARS: usize = 4096;

/// The longest message body stored, in characters: a provider's text is kept whole up to
/// this (WhatsApp delivers up to 65,536); longer ones are kept as dead letters.
pub const MAX_STORED_BODY_CHARS: usize = 65_536;

/// Who sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the contact.
    Inbound,
    /// From an agent (or an automated send on the agent's behalf).
    Outbound,
    /// A note from Parley itself.
    System,
}

impl Direction {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::System => "system",
        }
    }
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The contact the conversation is with.
    pub contact_id: ContactId,
    /// The interaction it belongs to, if any.
    pub interaction_id: Option<InteractionId>,
    /// The channel.
    pub channel: Channel,
    /// Direction.
    pub direction: Direction,
    /// The agent, for outbound messages.
    pub sender_user_id: Option<UserId>,
    /// `text`, `image`, `template`, `interactive`, `button_reply`, `reaction`, …
    pub kind: String,
    /// The text, if any (at most [`MAX_STORED_BODY_CHARS`] characters).
    pub body: Option<String>,
    /// Kind-specific structured content (and the provider's raw payload where useful).
    pub payload: Value,
    /// The tenant's channel account it came through or goes out of.
    pub channel_account_id: Option<Uuid>,
    /// The provider's id: unique per channel account, so a replay inserts nothing.
    pub provider_message_id: Option<String>,
    /// The message this one replies to.
    pub reply_to_id: Option<MessageId>,
    /// `received` for inbound; `queued`, `sent`, `delivered`, `read`, `failed` outbound.
    pub status: String,
    /// Attachments, in order.
    pub attachment_ids: Vec<AttachmentId>,
}

/// A stored message. It serialises (in `message.created` events) exactly as the API's
/// transcript shows it: `text`, and `sender` with its `type` and `user_id`.
#[derive(Debug, Clone)]
pub struct Message {
    /// Id (UUID v7).
    pub id: Uuid,
    /// The contact.
    pub contact_id: Uuid,
    /// The interaction.
    pub interaction_id: Option<Uuid>,
    /// The channel.
    pub channel: String,
    /// `chat` or `open_media`.
    pub media: String,
    /// `inbound`, `outbound` or `system`.
    pub direction: String,
    /// The agent who sent it (outbound).
    pub sender_user_id: Option<Uuid>,
    /// Kind.
    pub kind: String,
    /// Text.
    pub body: Option<String>,
    /// Structured content.
    pub payload: Value,
    /// Attachments.
    pub attachments: Vec<Attachment>,
    /// The provider's id.
    pub provider_message_id: Option<String>,
    /// Replied-to message.
    pub reply_to_id: Option<Uuid>,
    /// Delivery status.
    pub status: String,
    /// The provider's error for a failed message.
    pub status_error: Option<Value>,
    /// Stored at.
    pub created_at: DateTime<Utc>,
}

impl Message {
    /// Who sent it: `contact`, `agent` (with the agent's user id) or `system`.
    pub fn sender(&self) -> (&'static str, Option<Uuid>) {
        match self.direction.as_str() {
            "inbound" => ("contact", None),
            "outbound" => ("agent", self.sender_user_id),
            _ => ("system", None),
        }
    }
}

impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Sender {
            #[serde(rename = "type")]
            type_: &'static str,
            user_id: Option<Uuid>,
        }
        #[derive(Serialize)]
        struct Wire<'a> {
            id: Uuid,
            contact_id: Uuid,
            interaction_id: Option<Uuid>,
            channel: &'a str,
            media: &'a str,
            direction: &'a str,
            sender: Sender,
            kind: &'a str,
            text: Option<&'a str>,
            payload: &'a Value,
            attachments: &'a [Attachment],
            provider_message_id: Option<&'a str>,
            reply_to_id: Option<Uuid>,
            status: &'a str,
            status_error: Option<&'a Value>,
            created_at: DateTime<Utc>,
        }
        let (type_, user_id) = self.sender();
        let sender = Sender { type_, user_id };
        Wire {
            id: self.id,
            contact_id: self.contact_id,
            interaction_id: self.interaction_id,
            channel: &self.channel,
            media: &self.media,
            direction: &self.direction,
            sender,
            kind: &self.kind,
            text: self.body.as_deref(),
            payload: &self.payload,
            attachments: &self.attachments,
            provider_message_id: self.provider_message_id.as_deref(),
            reply_to_id: self.reply_to_id,
            status: &self.status,
            status_error: self.status_error.as_ref(),
            created_at: self.created_at,
        }
        .serialize(s)
    }
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: Uuid,
    contact_id: Uuid,
    interaction_id: Option<Uuid>,
    channel: String,
    media: String,
    direction: String,
    sender_user_id: Option<Uuid>,
    kind: String,
    body: Option<String>,
    payload: Value,
    provider_message_id: Option<String>,
    reply_to_id: Option<Uuid>,
    status: String,
    status_error: Option<Value>,
    created_at: DateTime<Utc>,
}

const COLUMNS: &str = "m.id, m.contact_id, m.interaction_id, m.channel, m.media, m.direction, \
     m.sender_user_id, m.kind, m.body, m.payload, m.provider_message_id, m.reply_to_id, \
     m.status, m.status_error, m.created_at";

#[derive(sqlx::FromRow)]
struct AttachmentLink {
    message_id: Uuid,
    #[sqlx(flatten)]
    attachment: Attachment,
}

async fn with_attachments(
    conn: &mut PgConnection,
    tenant: TenantId,
    rows: Vec<MessageRow>,
) -> Result<Vec<Message>, StoreError> {
    rows_to_messages(conn, tenant, rows, true).await
}

/// `may_have_attachments: false` when the caller knows there are none (a message it has
/// just inserted without any): no query.
async fn rows_to_messages(
    conn: &mut PgConnection,
    tenant: TenantId,
    rows: Vec<MessageRow>,
    may_have_attachments: bool,
) -> Result<Vec<Message>, StoreError> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let links = if ids.is_empty() || !may_have_attachments {
        Vec::new()
    } else {
        sqlx::query_as::<_, AttachmentLink>(
            "SELECT ma.message_id, a.id, a.mime_type, a.size, a.sha256, a.width, a.height,
                    a.filename, a.created_at
             FROM message_attachments ma JOIN attachments a ON a.id = ma.attachment_id
             WHERE ma.tenant_id = $1 AND ma.message_id = ANY($2)
             ORDER BY ma.message_id, ma.position",
        )
        .bind(tenant.0)
        .bind(&ids)
        .fetch_all(conn)
        .await?
    };
    Ok(rows
        .into_iter()
        .map(|r| Message {
            attachments: links
                .iter()
                .filter(|l| l.message_id == r.id)
                .map(|l| l.attachment.clone())
                .collect(),
            id: r.id,
            contact_id: r.contact_id,
            interaction_id: r.interaction_id,
            channel: r.channel,
            media: r.media,
            direction: r.direction,
            sender_user_id: r.sender_user_id,
            kind: r.kind,
            body: r.body,
            payload: r.payload,
            provider_message_id: r.provider_message_id,
            reply_to_id: r.reply_to_id,
            status: r.status,
            status_error: r.status_error,
            created_at: r.created_at,
        })
        .collect())
}

/// Check a body against the storage limit.
pub fn check_body(body: &str) -> Result<(), StoreError> {
    if body.chars().count() > MAX_STORED_BODY_CHARS {
        return Err(StoreError::Invalid {
            field: "body",
            message: format!("must be at most {MAX_STORED_BODY_CHARS} characters"),
        });
    }
    Ok(())
}

/// Store a message, link its attachments, move the contact's activity and append a
/// `message.created` event. `None` when a message with the same provider id (on the same
/// channel account) is already stored: a replay inserts nothing.
pub async fn insert(
    conn: &mut PgConnection,
    tenant: TenantId,
    new: &NewMessage,
) -> Result<Option<Message>, StoreError> {
    Ok(insert_many(conn, &[(tenant, new)]).await?.pop().flatten())
}

/// Store several messages at once (each of its own tenant), in order: one statement for
/// the messages with the contacts' activity and unread counts, and one for their
/// `message.created` and the inbound ones' `conversation.unread` events, whatever their
/// number.
/// Each result is `None` for a replay (the provider id is already stored, or repeated
/// earlier in `items`).
pub async fn insert_many(
    conn: &mut PgConnection,
    items: &[(TenantId, &NewMessage)],
) -> Result<Vec<Option<Message>>, StoreError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    for (tenant, new) in items {
        if let Some(b) = &new.body {
            check_body(b)?;
        }
        if !new.attachment_ids.is_empty() {
            let ids: Vec<Uuid> = new.attachment_ids.iter().map(|a| a.0).collect();
            let found: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM attachments WHERE tenant_id = $1 AND id = ANY($2)",
            )
            .bind(tenant.0)
            .bind(&ids)
            .fetch_one(&mut *conn)
            .await?;
            if usize::try_from(found).unwrap_or(0) != ids.len() {
                return Err(StoreError::Invalid {
                    field: "attachment_ids",
                    message: "refers to an attachment that does not exist".to_owned(),
                });
            }
        }
    }
    let ids: Vec<Uuid> = items.iter().map(|_| MessageId::new().0).collect();
    let col = |f: &dyn Fn(&NewMessage) -> Option<String>| -> Vec<Option<String>> {
        items.iter().map(|(_, n)| f(n)).collect()
    };
    let (mut search, mut sig_a, mut sig_b) = (
        Vec::with_capacity(items.len()),
        Vec::with_capacity(items.len()),
        Vec::with_capacity(items.len()),
    );
    for (_, n) in items {
        let text = searchable_text(n.body.as_deref(), &n.payload);
        let indexed = search::indexed(&text);
        search.push(indexed.tsvector);
        sig_a.push(indexed.signature.0);
        sig_b.push(indexed.signature.1);
    }
    // One statement: the messages, then the contacts' activity and unread counts from
    // the rows actually inserted (a replay moves nothing). Contact rows are locked in id
    // order, so two batches never wait on each other in a circle, and with the lock an
    // UPDATE takes anyway (`NO KEY UPDATE`): `FOR UPDATE` would conflict with the
    // key-share lock every message insert's foreign-key check holds on its contact, and
    // two transactions writing to one contact deadlocked. An inbound message counts as
    // unread when it is after the read mark as the row stands once locked (a mark moved
    // meanwhile is seen: see `mark_read`). Each message row comes back with its contact's
    // count and read mark after the update.
    let rows = crate::batch_rows(
        &[
            "$1::uuid[]",
            "$2::uuid[]",
            "$3::uuid[]",
            "$4::uuid[]",
            "$5::text[]",
            "$6::text[]",
            "$7::text[]",
            "$8::uuid[]",
            "$9::text[]",
            "$10::text[]",
            "$11::jsonb[]",
            "$12::uuid[]",
            "$13::text[]",
            "$14::uuid[]",
            "$15::text[]",
            "$16::text[]",
            "$17::int8[]",
            "$18::int8[]",
        ],
        "id, tenant_id, contact_id, interaction_id, channel, media, direction, sender_user_id, \
         kind, body, payload, channel_account_id, provider_message_id, reply_to_id, status, search, \
         sig_a, sig_b",
        items.len(),
    );
    let version = search::VERSION;
    let sql = format!(
        "WITH ins AS (
           INSERT INTO messages AS m (id, tenant_id, contact_id, interaction_id, channel, media,
              direction, sender_user_id, kind, body, payload, channel_account_id,
              provider_message_id, reply_to_id, status, search, search_sig_a, search_sig_b,
              search_version)
           SELECT x.id, x.tenant_id, x.contact_id, x.interaction_id, x.channel, x.media,
              x.direction, x.sender_user_id, x.kind, x.body, x.payload, x.channel_account_id,
              x.provider_message_id, x.reply_to_id, x.status, x.search::tsvector, x.sig_a, x.sig_b,
              {version}
           FROM {rows}
           ORDER BY x.ord
           ON CONFLICT ON CONSTRAINT messages_provider_id_key DO NOTHING
           RETURNING {COLUMNS}, m.tenant_id),
         t AS (SELECT tenant_id, contact_id, created_at AS at, id,
                      direction = 'inbound' AS inbound FROM ins),
         counted AS (
           UPDATE contacts c SET last_activity_at = GREATEST(c.last_activity_at, x.at),
                  unread_count = c.unread_count + CASE
                      WHEN x.inbound = 0 THEN 0
                      -- All of them after the mark (the rule but for a race with a read).
                      WHEN c.read_up_to_at IS NULL
                           OR (x.first_at, x.first_id) > (c.read_up_to_at, c.read_up_to_id)
                        THEN x.inbound
                      ELSE (SELECT count(*) FROM t y
                            WHERE y.contact_id = c.id AND y.inbound
                              AND (y.at, y.id) > (c.read_up_to_at, c.read_up_to_id))::int
                  END
           FROM (SELECT t.tenant_id, t.contact_id, max(t.at) AS at,
                        (count(*) FILTER (WHERE t.inbound))::int AS inbound,
                        (array_agg(t.at ORDER BY t.at, t.id) FILTER (WHERE t.inbound))[1] AS first_at,
                        (array_agg(t.id ORDER BY t.at, t.id) FILTER (WHERE t.inbound))[1] AS first_id
                 FROM t GROUP BY 1, 2) AS x,
                (SELECT k.id FROM contacts k
                 WHERE (k.tenant_id, k.id) IN (SELECT tenant_id, contact_id FROM t)
                 ORDER BY k.id FOR NO KEY UPDATE OF k) AS locked
           WHERE c.tenant_id = x.tenant_id AND c.id = x.contact_id AND locked.id = c.id
           RETURNING c.id, c.unread_count, c.read_up_to_at, c.read_up_to_id)
         SELECT ins.*, counted.unread_count AS contact_unread_count,
                counted.read_up_to_at AS contact_read_up_to_at,
                counted.read_up_to_id AS contact_read_up_to_id
         FROM ins LEFT JOIN counted ON counted.id = ins.contact_id"
    );
    let uuids = |f: &dyn Fn(&NewMessage) -> Option<Uuid>| -> Vec<Option<Uuid>> {
        items.iter().map(|(_, n)| f(n)).collect()
    };
    let inserted = sqlx::query_as::<_, InsertedRow>(AssertSqlSafe(sql))
        .bind(&ids)
        .bind(items.iter().map(|(t, _)| t.0).collect::<Vec<_>>())
        .bind(uuids(&|n| Some(n.contact_id.0)))
        .bind(uuids(&|n| n.interaction_id.map(|i| i.0)))
        .bind(col(&|n| Some(n.channel.as_str().to_owned())))
        .bind(col(&|n| Some(n.channel.media().as_str().to_owned())))
        .bind(col(&|n| Some(n.direction.as_str().to_owned())))
        .bind(uuids(&|n| n.sender_user_id.map(|u| u.0)))
        .bind(col(&|n| Some(n.kind.clone())))
        .bind(col(&|n| n.body.clone()))
        .bind(
            items
                .iter()
                .map(|(_, n)| n.payload.clone())
                .collect::<Vec<_>>(),
        )
        .bind(uuids(&|n| n.channel_account_id))
        .bind(col(&|n| n.provider_message_id.clone()))
        .bind(uuids(&|n| n.reply_to_id.map(|r| r.0)))
        .bind(col(&|n| Some(n.status.clone())))
        .bind(search)
        .bind(sig_a)
        .bind(sig_b)
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::from_db)?;
    if inserted.is_empty() {
        return Ok(vec![None; items.len()]);
    }
    let mut counted: Vec<Counted> = Vec::new();
    let mut rows: Vec<MessageRow> = Vec::with_capacity(inserted.len());
    for r in inserted {
        if let Some(unread_count) = r.contact_unread_count
            && !counted.iter().any(|c| c.id == r.row.contact_id)
        {
            counted.push(Counted {
                id: r.row.contact_id,
                unread_count,
                read_up_to_at: r.contact_read_up_to_at,
                read_up_to_id: r.contact_read_up_to_id,
            });
        }
        rows.push(r.row);
    }
    // Each returned row's place in `items` (rows come back in no promised order).
    let index_of: std::collections::HashMap<Uuid, usize> =
        ids.iter().enumerate().map(|(k, id)| (*id, k)).collect();
    let mut any_attachments = false;
    for row in &rows {
        let Some((tenant, new)) = index_of.get(&row.id).map(|k| items[*k]) else {
            continue;
        };
        for (pos, att) in new.attachment_ids.iter().enumerate() {
            any_attachments = true;
            sqlx::query(
                "INSERT INTO message_attachments (message_id, attachment_id, tenant_id, position)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(row.id)
            .bind(att.0)
            .bind(tenant.0)
            .bind(i32::try_from(pos).unwrap_or(i32::MAX))
            .execute(&mut *conn)
            .await
            .map_err(StoreError::from_db)?;
        }
    }
    // In the order given, each with its tenant.
    rows.sort_by_key(|r| index_of.get(&r.id).copied());
    let by_tenant: Vec<(TenantId, MessageRow)> = rows
        .into_iter()
        .filter_map(|r| index_of.get(&r.id).map(|k| (items[*k].0, r)))
        .collect();
    let stored_contacts: Vec<Uuid> = by_tenant.iter().map(|(_, r)| r.contact_id).collect();
    let stored_at: Vec<DateTime<Utc>> = by_tenant.iter().map(|(_, r)| r.created_at).collect();
    let stored_ids: Vec<Uuid> = by_tenant.iter().map(|(_, r)| r.id).collect();
    let inbound: Vec<bool> = by_tenant
        .iter()
        .map(|(_, r)| r.direction == Direction::Inbound.as_str())
        .collect();
    let mut messages = Vec::with_capacity(by_tenant.len());
    let mut rows_of_tenant: Vec<(TenantId, Message)> = Vec::with_capacity(by_tenant.len());
    for (tenant, row) in by_tenant {
        let m = rows_to_messages(conn, tenant, vec![row], any_attachments)
            .await?
            .pop()
            .ok_or(StoreError::NotFound("message"))?;
        rows_of_tenant.push((tenant, m));
    }
    // `message.created` for each message, then `conversation.unread` for each inbound
    // one: the contact's unread count as of that message (what it was before this batch
    // plus the counted messages of the batch up to it).
    let counts = unread_as_of(
        &counted,
        &stored_contacts,
        &stored_at,
        &stored_ids,
        &inbound,
    );
    #[derive(serde::Serialize)]
    struct Created<'a> {
        message: &'a Message,
    }
    let mut appended: Vec<(TenantId, Audience, &str, String)> = Vec::new();
    for (t, m) in &rows_of_tenant {
        let payload =
            serde_json::to_string(&Created { message: m }).map_err(|e| StoreError::Invalid {
                field: "message",
                message: format!("cannot be serialised: {e}"),
            })?;
        appended.push((*t, Audience::Tenant, "message.created", payload));
    }
    for ((t, m), count) in rows_of_tenant.iter().zip(&counts) {
        if let Some(n) = count {
            appended.push((
                *t,
                Audience::Tenant,
                "conversation.unread",
                json!({ "contact_id": m.contact_id, "unread_count": n }).to_string(),
            ));
        }
    }
    events::append_many(conn, appended).await?;
    let mut stored = rows_of_tenant.into_iter().map(|(_, m)| m).peekable();
    for id in &ids {
        if stored.peek().is_some_and(|m| m.id == *id) {
            messages.push(stored.next());
        } else {
            messages.push(None);
        }
    }
    Ok(messages)
}

/// A stored message with its contact's unread count and read mark after the insert.
#[derive(sqlx::FromRow)]
struct InsertedRow {
    #[sqlx(flatten)]
    row: MessageRow,
    contact_unread_count: Option<i32>,
    contact_read_up_to_at: Option<DateTime<Utc>>,
    contact_read_up_to_id: Option<Uuid>,
}

/// A contact as storing messages left it: its unread count and read mark.
struct Counted {
    id: Uuid,
    unread_count: i32,
    read_up_to_at: Option<DateTime<Utc>>,
    read_up_to_id: Option<Uuid>,
}

/// For each stored message (in order), the unread count of its contact as of that
/// message when it is inbound, given each contact's count after the batch and its read
/// mark: the count before the batch plus the batch's counted messages up to it.
fn unread_as_of(
    counted: &[Counted],
    contacts: &[Uuid],
    at: &[DateTime<Utc>],
    ids: &[Uuid],
    inbound: &[bool],
) -> Vec<Option<i64>> {
    let mark: std::collections::HashMap<Uuid, &Counted> =
        counted.iter().map(|c| (c.id, c)).collect();
    let counts = |k: usize| {
        inbound[k]
            && mark
                .get(&contacts[k])
                .is_some_and(|c| match (c.read_up_to_at, c.read_up_to_id) {
                    (Some(t), Some(i)) => (at[k], ids[k]) > (t, i),
                    _ => true,
                })
    };
    (0..contacts.len())
        .map(|k| {
            let c = mark.get(&contacts[k])?;
            if !inbound[k] {
                return None;
            }
            // Counted messages of this contact in the batch after this one.
            let later = (0..contacts.len())
                .filter(|j| {
                    contacts[*j] == contacts[k] && counts(*j) && (at[*j], ids[*j]) > (at[k], ids[k])
                })
                .count();
            Some(i64::from(c.unread_count) - i64::try_from(later).unwrap_or(0))
        })
        .collect()
}

/// One message of `tenant`.
pub async fn get(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: MessageId,
) -> Result<Option<Message>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM messages m WHERE m.tenant_id = $1 AND m.id = $2");
    let row = sqlx::query_as::<_, MessageRow>(AssertSqlSafe(sql))
        .bind(tenant.0)
        .bind(id.0)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(r) => Ok(with_attachments(conn, tenant, vec![r]).await?.pop()),
        None => Ok(None),
    }
}

/// Which page of a transcript to read.
#[derive(Debug, Clone, Default)]
pub struct TranscriptQuery {
    /// Messages older than this one.
    pub before: Option<MessageId>,
    /// Messages newer than this one.
    pub after: Option<MessageId>,
    /// The page around this message (for jumping to a search hit).
    pub around: Option<MessageId>,
    /// Page size.
    pub limit: i64,
    /// Only chat or only open media.
    pub media: Option<Media>,
    /// Keyword search within the transcript.
    pub q: Option<String>,
}

/// A page of a transcript, oldest first.
#[derive(Debug, Clone)]
pub struct TranscriptPage {
    /// The messages, in time order.
    pub items: Vec<Message>,
    /// Pass as `before` for the older page; `None` at the beginning.
    pub prev_cursor: Option<Uuid>,
    /// Pass as `after` for the newer page; `None` at the end (for now).
    pub next_cursor: Option<Uuid>,
}

async fn anchor(
    conn: &mut PgConnection,
    tenant: TenantId,
    contact: ContactId,
    id: MessageId,
    field: &'static str,
) -> Result<(DateTime<Utc>, Uuid), StoreError> {
    let at: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT created_at FROM messages WHERE tenant_id = $1 AND contact_id = $2 AND id = $3",
    )
    .bind(tenant.0)
    .bind(contact.0)
    .bind(id.0)
    .fetch_optional(conn)
    .await?;
    at.map(|a| (a, id.0)).ok_or(StoreError::Invalid {
        field,
        message: "is not a message of this contact".to_owned(),
    })
}

/// The channel account a message of the tenant came or went through.
pub async fn channel_account_of(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: MessageId,
) -> Result<Option<Uuid>, StoreError> {
    Ok(sqlx::query_scalar::<_, Option<Uuid>>(
        "SELECT channel_account_id FROM messages WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.0)
    .bind(id.0)
    .fetch_optional(conn)
    .await?
    .flatten())
}

/// Move an outbound message to `new` if that is forward
/// ([`MessageStatus::may_move_to`]), recording the provider's id if it was not known and
/// the provider's error; a `message.status` event tells the tenant. Returns the message's
/// contact and channel when it moved.
pub async fn advance_status(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: MessageId,
    new: MessageStatus,
    provider_message_id: Option<&str>,
    error: Option<&Value>,
) -> Result<Option<(Uuid, Channel)>, StoreError> {
    let row: Option<(String, Uuid, String)> = sqlx::query_as(
        "SELECT status, contact_id, channel FROM messages
         WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(tenant.0)
    .bind(id.0)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((current, contact_id, channel)) = row else {
        return Ok(None);
    };
    if let Some(pid) = provider_message_id {
        sqlx::query(
            "UPDATE messages SET provider_message_id = $3
             WHERE tenant_id = $1 AND id = $2 AND provider_message_id IS NULL",
        )
        .bind(tenant.0)
        .bind(id.0)
        .bind(pid)
        .execute(&mut *conn)
        .await?;
    }
    let (Some(current), Ok(channel)) = (MessageStatus::parse(&current), channel.parse::<Channel>())
    else {
        return Ok(None);
    };
    if !current.may_move_to(new) {
        return Ok(None);
    }
    sqlx::query(
        "UPDATE messages SET status = $3, status_error = COALESCE($4, status_error)
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.0)
    .bind(id.0)
    .bind(new.as_str())
    .bind(error)
    .execute(&mut *conn)
    .await?;
    crate::events::append(
        conn,
        tenant,
        crate::events::Audience::Tenant,
        "message.status",
        &serde_json::json!({ "message_id": id.0, "contact_id": contact_id, "status": new.as_str(), "error": error }),
    )
    .await?;
    Ok(Some((contact_id, channel)))
}

/// What of a message search looks in: its text and a media caption.
fn searchable_text(body: Option<&str>, payload: &Value) -> String {
    let mut text = body.unwrap_or_default().to_owned();
    if let Some(caption) = payload.get("caption").and_then(Value::as_str) {
        text.push(' ');
        text.push_str(caption);
    }
    text
}

/// Analyse again up to `batch` messages stored with an older search analysis (see
/// [`search::VERSION`]), newest first; returns how many. Run by the gateway in the
/// background after an upgrade, across tenants, a batch per transaction.
pub async fn reindex_stale(conn: &mut PgConnection, batch: i64) -> Result<u64, StoreError> {
    let version = search::VERSION;
    let rows: Vec<(Uuid, Option<String>, Value)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT id, body, payload FROM messages WHERE search_version < {version}
         ORDER BY created_at DESC, id LIMIT $1 FOR UPDATE SKIP LOCKED"
    )))
    .bind(batch)
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let (mut ids, mut vectors, mut sig_a, mut sig_b) = (vec![], vec![], vec![], vec![]);
    for (id, body, payload) in &rows {
        let indexed = search::indexed(&searchable_text(body.as_deref(), payload));
        ids.push(*id);
        vectors.push(indexed.tsvector);
        sig_a.push(indexed.signature.0);
        sig_b.push(indexed.signature.1);
    }
    let done = sqlx::query(
        "UPDATE messages m SET search = x.s::tsvector, search_sig_a = x.a, search_sig_b = x.b,
                search_version = $5
         FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::int8[]) AS x(id, s, a, b)
         WHERE m.id = x.id",
    )
    .bind(&ids)
    .bind(&vectors)
    .bind(&sig_a)
    .bind(&sig_b)
    .bind(version)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// A search's bounded walk: the first `bound` messages that `scope` (over alias `w`)
/// selects, in (`created_at`, `id`) `order`, read from an index that carries the
/// signatures (`search_sig_a`, `search_sig_b`) so that the walk itself never visits the
/// table; only messages whose signature covers the query's (`sig` parameters) are read
/// and checked against `check` (over alias `m`), up to `limit` of them. Every match
/// within the walk is found, in order: a signature has no false negatives. Public so
/// that the plan tests explain the very statement the searches run.
pub fn signature_walk(
    scope: &str,
    order: &str,
    bound: i64,
    sig: (&str, &str),
    check: &str,
    limit: &str,
) -> String {
    let (a, b) = sig;
    format!(
        "SELECT {COLUMNS} FROM (
           SELECT w.id, w.created_at FROM (
             SELECT w.id, w.created_at, w.search_sig_a, w.search_sig_b FROM messages w
             WHERE {scope}
             ORDER BY w.created_at {order}, w.id {order} LIMIT {bound}) w
           WHERE w.search_sig_a & {a} = {a} AND w.search_sig_b & {b} = {b}) c
         JOIN messages m ON m.id = c.id
         WHERE m.tenant_id = $1 AND {check}
         ORDER BY c.created_at {order}, c.id {order} LIMIT {limit}"
    )
}

/// How many of a contact's messages a search walks by signature before the full-text
/// statement answers instead (at most ~3 ms in the index alone, measured at 5M messages).
const CONTACT_WALK: i64 = 5000;

/// Older (`older = true`, newest first) or newer (oldest first) messages than `from`.
#[expect(
    clippy::too_many_arguments,
    reason = "one private helper; the flags read clearly at the call sites"
)]
async fn slice(
    conn: &mut PgConnection,
    tenant: TenantId,
    contact: ContactId,
    from: Option<(DateTime<Utc>, Uuid)>,
    inclusive: bool,
    older: bool,
    q: &TranscriptQuery,
    limit: i64,
) -> Result<Vec<MessageRow>, StoreError> {
    let tsquery = q.q.as_deref().and_then(search::tsquery_literal);
    if q.q.is_some() && tsquery.is_none() {
        return Ok(Vec::new());
    }
    let cmp = match (older, inclusive) {
        (true, false) => "<",
        (true, true) => "<=",
        (false, false) => ">",
        (false, true) => ">=",
    };
    let order = if older { "DESC" } else { "ASC" };
    // A search first walks the contact's next CONTACT_WALK messages in the transcript
    // index alone, reading only those whose signature covers the query's. When that
    // fills the page, the page is exactly what the full statement below would give (the
    // same order, no match skipped, each read message checked in full); when it does not,
    // the statement below answers on its own (the planner's choice: usually the GIN
    // index, whose cost follows how common the word is across the whole table).
    if let (Some(tsquery), Some(sig)) = (
        tsquery.as_deref(),
        q.q.as_deref().and_then(search::query_signature),
    ) {
        let cursor = if from.is_some() {
            format!(" AND (w.created_at, w.id) {cmp} ($4, $5)")
        } else {
            String::new()
        };
        let walk = signature_walk(
            &format!("w.tenant_id = $1 AND w.contact_id = $2{cursor}"),
            order,
            CONTACT_WALK,
            ("$8", "$9"),
            "m.search @@ $6::tsquery AND ($3::text IS NULL OR m.media = $3)",
            "$7",
        );
        let walked = sqlx::query_as::<_, MessageRow>(AssertSqlSafe(walk))
            .bind(tenant.0)
            .bind(contact.0)
            .bind(q.media.map(Media::as_str))
            .bind(from.map(|f| f.0))
            .bind(from.map(|f| f.1))
            .bind(tsquery)
            .bind(limit)
            .bind(sig.0)
            .bind(sig.1)
            .fetch_all(&mut *conn)
            .await?;
        if i64::try_from(walked.len()).unwrap_or(i64::MAX) >= limit {
            return Ok(walked);
        }
    }
    let mut sql = format!(
        "SELECT {COLUMNS} FROM messages m WHERE m.tenant_id = $1 AND m.contact_id = $2
           AND ($3::text IS NULL OR m.media = $3)"
    );
    if from.is_some() {
        sql.push_str(&format!(" AND (m.created_at, m.id) {cmp} ($4, $5)"));
    }
    if tsquery.is_some() {
        sql.push_str(" AND m.search @@ $6::tsquery");
    }
    sql.push_str(&format!(
        " ORDER BY m.created_at {order}, m.id {order} LIMIT $7"
    ));
    let mut query = sqlx::query_as::<_, MessageRow>(AssertSqlSafe(sql))
        .bind(tenant.0)
        .bind(contact.0)
        .bind(q.media.map(Media::as_str));
    query = query
        .bind(from.map(|f| f.0))
        .bind(from.map(|f| f.1))
        .bind(tsquery)
        .bind(limit);
    Ok(query.fetch_all(conn).await?)
}

/// A page of the contact's transcript across all interactions and channels.
pub async fn transcript(
    conn: &mut PgConnection,
    tenant: TenantId,
    contact: ContactId,
    q: &TranscriptQuery,
) -> Result<TranscriptPage, StoreError> {
    let limit = q.limit.clamp(1, 200);
    let take = usize::try_from(limit).unwrap_or(50);
    // Search statements: plan for the actual term every time (a generic plan can pick an
    // index walk that is catastrophic for a rare word).
    if q.q.is_some() {
        sqlx::query("SET LOCAL plan_cache_mode = force_custom_plan")
            .execute(&mut *conn)
            .await?;
    }
    let (older, newer): (Vec<MessageRow>, Vec<MessageRow>);
    let (more_before, more_after);
    if let Some(a) = q.after {
        let from = anchor(conn, tenant, contact, a, "after").await?;
        let mut rows = slice(
            conn,
            tenant,
            contact,
            Some(from),
            false,
            false,
            q,
            limit + 1,
        )
        .await?;
        more_after = rows.len() > take;
        rows.truncate(take);
        more_before = true;
        older = Vec::new();
        newer = rows;
    } else if let Some(b) = q.before {
        let from = anchor(conn, tenant, contact, b, "before").await?;
        let mut rows = slice(conn, tenant, contact, Some(from), false, true, q, limit + 1).await?;
        more_before = rows.len() > take;
        rows.truncate(take);
        more_after = true;
        older = rows;
        newer = Vec::new();
    } else if let Some(c) = q.around {
        let from = anchor(conn, tenant, contact, c, "around").await?;
        let half = (limit / 2).max(1);
        let half_take = usize::try_from(half).unwrap_or(1);
        // The anchor and older ones (newest first), then strictly newer ones.
        let mut before = slice(conn, tenant, contact, Some(from), true, true, q, half + 1).await?;
        more_before = before.len() > half_take;
        before.truncate(half_take);
        let after_take = take.saturating_sub(before.len()).max(1);
        let mut after = slice(
            conn,
            tenant,
            contact,
            Some(from),
            false,
            false,
            q,
            i64::try_from(after_take).unwrap_or(1) + 1,
        )
        .await?;
        more_after = after.len() > after_take;
        after.truncate(after_take);
        older = before;
        newer = after;
    } else {
        let mut rows = slice(conn, tenant, contact, None, false, true, q, limit + 1).await?;
        more_before = rows.len() > take;
        rows.truncate(take);
        more_after = false;
        older = rows;
        newer = Vec::new();
    }
    let mut rows: Vec<MessageRow> = older.into_iter().rev().collect();
    rows.extend(newer);
    let items = with_attachments(conn, tenant, rows).await?;
    Ok(TranscriptPage {
        prev_cursor: if more_before {
            items.first().map(|m| m.id)
        } else {
            None
        },
        next_cursor: if more_after {
            items.last().map(|m| m.id)
        } else {
            None
        },
        items,
    })
}

/// A tenant-wide search hit.
#[derive(Debug, Clone)]
pub struct SearchHit {
    /// The message.
    pub message: Message,
    /// The contact's name.
    pub contact_name: String,
    /// The body with matches wrapped in `<mark>`.
    pub highlight: String,
}

/// How many of the newest messages tenant-wide search looks through before it turns to
/// the full-text index.
const RECENT_WINDOW: i64 = 5000;

/// Messages of the whole tenant matching `q`, newest first, after the `before` cursor.
pub async fn search_tenant(
    conn: &mut PgConnection,
    tenant: TenantId,
    q: &str,
    media: Option<Media>,
    before: Option<MessageId>,
    limit: i64,
) -> Result<(Vec<SearchHit>, Option<Uuid>), StoreError> {
    let (Some(tsquery), Some(sig)) = (search::tsquery_literal(q), search::query_signature(q))
    else {
        return Ok((Vec::new(), None));
    };
    let limit = limit.clamp(1, 100);
    let take = usize::try_from(limit).unwrap_or(20);
    sqlx::query("SET LOCAL plan_cache_mode = force_custom_plan")
        .execute(&mut *conn)
        .await?;
    let from: Option<DateTime<Utc>> = match before {
        Some(b) => Some(
            sqlx::query_scalar("SELECT created_at FROM messages WHERE tenant_id = $1 AND id = $2")
                .bind(tenant.0)
                .bind(b.0)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or(StoreError::Invalid {
                    field: "cursor",
                    message: "is not a message of this tenant".to_owned(),
                })?,
        ),
        None => None,
    };
    // Two phases, so that the cost never rests on the planner guessing a word's
    // frequency. First the newest RECENT_WINDOW messages (a signature walk of the
    // recency index, which reads only the messages that may match): a common word fills
    // the page there. Only when it does not is the word rare enough
    // for the full-text index, which is then the only plan allowed (a recency walk for a
    // rare word reads the whole tenant; a sequential scan reads every tenant).
    let recent = signature_walk(
        "w.tenant_id = $1 AND ($4::timestamptz IS NULL OR (w.created_at, w.id) < ($4, $5))",
        "DESC",
        RECENT_WINDOW,
        ("$7", "$8"),
        "m.search @@ $2::tsquery AND ($3::text IS NULL OR m.media = $3)",
        "$6",
    );
    let indexed = format!(
        "SELECT {COLUMNS} FROM messages m
         WHERE m.tenant_id = $1 AND m.search @@ $2::tsquery
           AND ($3::text IS NULL OR m.media = $3)
           AND ($4::timestamptz IS NULL OR (m.created_at, m.id) < ($4, $5))
         ORDER BY m.created_at DESC, m.id DESC LIMIT $6"
    );
    let (media, cursor_id) = (media.map(Media::as_str), before.map(|b| b.0));
    let mut rows: Vec<MessageRow> = Vec::new();
    for (phase, sql) in [recent, indexed].into_iter().enumerate() {
        let index_phase = phase == 1;
        if index_phase {
            if rows.len() > take {
                break;
            }
            sqlx::raw_sql("SET LOCAL enable_indexscan = off; SET LOCAL enable_seqscan = off")
                .execute(&mut *conn)
                .await?;
        }
        rows = sqlx::query_as::<_, MessageRow>(AssertSqlSafe(sql))
            .bind(tenant.0)
            .bind(&tsquery)
            .bind(media)
            .bind(from)
            .bind(cursor_id)
            .bind(limit + 1)
            .bind(sig.0)
            .bind(sig.1)
            .fetch_all(&mut *conn)
            .await?;
        if index_phase {
            sqlx::raw_sql("RESET enable_indexscan; RESET enable_seqscan")
                .execute(&mut *conn)
                .await?;
        }
    }
    let more = rows.len() > take;
    rows.truncate(take);
    let contact_ids: Vec<Uuid> = rows.iter().map(|r| r.contact_id).collect();
    let names: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, name FROM contacts WHERE tenant_id = $1 AND id = ANY($2)")
            .bind(tenant.0)
            .bind(&contact_ids)
            .fetch_all(&mut *conn)
            .await?;
    let messages = with_attachments(conn, tenant, rows).await?;
    let next = if more {
        messages.last().map(|m| m.id)
    } else {
        None
    };
    let hits = messages
        .into_iter()
        .map(|m| {
            let text = m.body.clone().unwrap_or_default();
            SearchHit {
                contact_name: names
                    .iter()
                    .find(|(id, _)| *id == m.contact_id)
                    .map(|(_, n)| n.clone())
                    .unwrap_or_default(),
                highlight: search::highlight(&text, q),
                message: m,
            }
        })
        .collect();
    Ok((hits, next))
}

/// Inbound messages of the contact not yet read by an agent (kept on the contact).
pub async fn unread_count(
    conn: &mut PgConnection,
    tenant: TenantId,
    contact: ContactId,
) -> Result<i64, StoreError> {
    let n: Option<i32> =
        sqlx::query_scalar("SELECT unread_count FROM contacts WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.0)
            .bind(contact.0)
            .fetch_optional(conn)
            .await?;
    Ok(n.map(i64::from).unwrap_or(0))
}

/// Mark the contact's messages read up to and including `up_to`; returns the new unread
/// count and appends a `conversation.unread` event. Marks never move backwards.
pub async fn mark_read(
    conn: &mut PgConnection,
    tenant: TenantId,
    contact: ContactId,
    up_to: MessageId,
    by: UserId,
) -> Result<i64, StoreError> {
    let at = anchor(conn, tenant, contact, up_to, "up_to_message_id").await?;
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    // The contact's row lock first, and the count in a later statement: a writer that
    // added to the count before we locked has committed by now and its messages are seen;
    // one that locks after us sees the new mark and counts against it.
    sqlx::query("SELECT 1 FROM contacts WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE")
        .bind(tenant.0)
        .bind(contact.0)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE contacts c SET read_up_to_at = $3, read_up_to_id = $4,
                unread_count = (SELECT count(*) FROM messages m
                                WHERE m.tenant_id = $1 AND m.contact_id = $2
                                  AND m.direction = 'inbound' AND (m.created_at, m.id) > ($3, $4))
         WHERE tenant_id = $1 AND id = $2
           AND (read_up_to_at IS NULL OR (read_up_to_at, read_up_to_id) < ($3, $4))",
    )
    .bind(tenant.0)
    .bind(contact.0)
    .bind(at.0)
    .bind(at.1)
    .execute(&mut *tx)
    .await?;
    let unread = unread_count(&mut tx, tenant, contact).await?;
    events::append(
        &mut tx,
        tenant,
        Audience::Tenant,
        "conversation.unread",
        &json!({ "contact_id": contact, "unread_count": unread, "read_by": by }),
    )
    .await?;
    tx.commit().await?;
    Ok(unread)
}

/// One row of the Communication tab.
#[derive(Debug, Clone)]
pub struct ConversationSummary {
    /// The contact.
    pub contact_id: Uuid,
    /// Its name.
    pub contact_name: String,
    /// Its newest activity.
    pub last_activity_at: DateTime<Utc>,
    /// Its newest message (within the media filter).
    pub last_message: Message,
    /// Inbound messages not yet read.
    pub unread_count: i64,
}

#[derive(sqlx::FromRow)]
struct ConversationRow {
    contact_name: String,
    last_activity_at: DateTime<Utc>,
    unread_count: i64,
    #[sqlx(flatten)]
    message: MessageRow,
}

/// Contacts with activity, most recent first; `after` is the previous page's last
/// `(last_activity_at, contact_id)`.
pub async fn conversations(
    conn: &mut PgConnection,
    tenant: TenantId,
    media: Option<Media>,
    q: Option<&str>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ConversationSummary>, StoreError> {
    let search = q.and_then(crate::contacts::ContactSearch::new);
    let sql = format!(
        "SELECT c.name AS contact_name, c.last_activity_at,
                c.unread_count::bigint AS unread_count,
                {COLUMNS}
         FROM contacts c
         CROSS JOIN LATERAL (
             SELECT * FROM messages m1
             WHERE m1.tenant_id = c.tenant_id AND m1.contact_id = c.id
               AND ($2::text IS NULL OR m1.media = $2)
             ORDER BY m1.created_at DESC, m1.id DESC LIMIT 1) m
         WHERE c.tenant_id = $1 AND c.last_activity_at IS NOT NULL
           AND {}
           AND ($3::timestamptz IS NULL OR (c.last_activity_at, c.id) < ($3, $4))
         ORDER BY c.last_activity_at DESC, c.id DESC
         LIMIT $5",
        search
            .as_ref()
            .map_or_else(|| "true".to_owned(), |s| s.condition(6)),
    );
    let mut query = sqlx::query_as::<_, ConversationRow>(AssertSqlSafe(sql))
        .bind(tenant.0)
        .bind(media.map(Media::as_str))
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1))
        .bind(limit);
    if let Some(s) = &search {
        query = s.bind(query);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    let mut meta = Vec::with_capacity(rows.len());
    let mut messages = Vec::with_capacity(rows.len());
    for r in rows {
        meta.push((r.contact_name, r.last_activity_at, r.unread_count));
        messages.push(r.message);
    }
    let messages = with_attachments(conn, tenant, messages).await?;
    Ok(meta
        .into_iter()
        .zip(messages)
        .map(|((name, at, unread), m)| ConversationSummary {
            contact_id: m.contact_id,
            contact_name: name,
            last_activity_at: at,
            unread_count: unread,
            last_message: m,
        })
        .collect())
}
