//! The contact directory: contacts, their free attributes and channel identities.

use chrono::{DateTime, Utc};
use parley_core::{ContactId, IdentityId, TenantId, channel::Channel, state::IdentityStatus};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::StoreError;

/// One address of a contact on one channel.
#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub contact_id: Uuid,
    /// Channel.
    pub channel: String,
    /// Normalised address (E.164 for phone channels).
    pub address: String,
    /// Consent and reachability.
    pub status: IdentityStatus,
    /// The provider's last error for an `invalid` identity.
    pub last_error: Option<Value>,
    /// When the contact last wrote from this address (WhatsApp's 24-hour window).
    pub last_inbound_at: Option<DateTime<Utc>>,
    /// When the provider said the window is closed (error 131047), if it did.
    pub window_closed_at: Option<DateTime<Utc>>,
    /// WhatsApp Connect: when it was requested, and the contact's answer (the message that
    /// gave it, kept as evidence).
    pub consent: Option<Value>,
    /// Added.
    pub created_at: DateTime<Utc>,
}

impl Identity {
    /// When WhatsApp's 24-hour customer-service window ends (or ended): 24 hours after the
    /// last inbound message, sooner if the provider closed it. `None` if never opened.
    pub fn window_expires_at(&self) -> Option<DateTime<Utc>> {
        window_end(self.last_inbound_at, self.window_closed_at)
    }
}

/// WhatsApp's 24-hour customer-service window: it ends 24 hours after the last inbound
/// message, or earlier when the provider said it closed (error 131047) since then.
pub fn window_end(
    last_inbound_at: Option<DateTime<Utc>>,
    window_closed_at: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let last = last_inbound_at?;
    let natural = last + chrono::Duration::hours(24);
    match window_closed_at {
        Some(closed) if closed >= last => Some(closed.min(natural)),
        _ => Some(natural),
    }
}

#[derive(sqlx::FromRow)]
struct IdentityRow {
    id: Uuid,
    contact_id: Uuid,
    channel: String,
    address: String,
    status: String,
    last_error: Option<Value>,
    last_inbound_at: Option<DateTime<Utc>>,
    window_closed_at: Option<DateTime<Utc>>,
    consent: Option<Value>,
    created_at: DateTime<Utc>,
}

impl From<IdentityRow> for Identity {
    fn from(r: IdentityRow) -> Self {
        Identity {
            id: r.id,
            contact_id: r.contact_id,
            channel: r.channel,
            address: r.address,
            // The table's CHECK constraint allows only these spellings.
            status: IdentityStatus::parse(&r.status).unwrap_or(IdentityStatus::Unverified),
            last_error: r.last_error,
            last_inbound_at: r.last_inbound_at,
            window_closed_at: r.window_closed_at,
            consent: r.consent,
            created_at: r.created_at,
        }
    }
}

/// A contact with its identities.
#[derive(Debug, Clone, Serialize)]
pub struct Contact {
    /// Id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// Free attributes (template auto-fill fields).
    pub attributes: Value,
    /// Addresses on channels.
    pub identities: Vec<Identity>,
    /// Newest message time, if any.
    pub last_activity_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ContactRow {
    id: Uuid,
    name: String,
    attributes: Value,
    last_activity_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

macro_rules! contact_columns {
    () => {
        "id, name, attributes, last_activity_at, created_at, updated_at"
    };
}
macro_rules! identity_columns {
    () => {
        "id, contact_id, channel, address, status, last_error, last_inbound_at, window_closed_at, consent, created_at"
    };
}

async fn attach_identities(
    conn: &mut PgConnection,
    tenant: TenantId,
    rows: Vec<ContactRow>,
) -> Result<Vec<Contact>, StoreError> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let idents = sqlx::query_as::<_, IdentityRow>(concat!(
        "SELECT ",
        identity_columns!(),
        " FROM channel_identities WHERE tenant_id = $1 AND contact_id = ANY($2) ORDER BY created_at, id"
    ))
    .bind(tenant.0)
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Contact {
            identities: idents
                .iter()
                .filter(|i| i.contact_id == r.id)
                .map(|i| Identity::from(clone_row(i)))
                .collect(),
            id: r.id,
            name: r.name,
            attributes: r.attributes,
            last_activity_at: r.last_activity_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
        .collect())
}

fn clone_row(r: &IdentityRow) -> IdentityRow {
    IdentityRow {
        id: r.id,
        contact_id: r.contact_id,
        channel: r.channel.clone(),
        address: r.address.clone(),
        status: r.status.clone(),
        last_error: r.last_error.clone(),
        last_inbound_at: r.last_inbound_at,
        window_closed_at: r.window_closed_at,
        consent: r.consent.clone(),
        created_at: r.created_at,
    }
}

/// Create a contact with its identities (addresses already normalised).
pub async fn create_contact(
    conn: &mut PgConnection,
    tenant: TenantId,
    name: &str,
    attributes: &Value,
    identities: &[(Channel, String)],
) -> Result<Contact, StoreError> {
    let id = ContactId::new();
    sqlx::query(
        "INSERT INTO contacts (id, tenant_id, name, attributes, search_text)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id.0)
    .bind(tenant.0)
    .bind(name)
    .bind(attributes)
    .bind(search_text(name, attributes))
    .execute(&mut *conn)
    .await?;
    for (channel, address) in identities {
        add_identity(conn, tenant, id, *channel, address).await?;
    }
    get_contact(conn, tenant, id)
        .await?
        .ok_or(StoreError::NotFound("contact"))
}

/// One contact of `tenant`.
pub async fn get_contact(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: ContactId,
) -> Result<Option<Contact>, StoreError> {
    let row = sqlx::query_as::<_, ContactRow>(concat!(
        "SELECT ",
        contact_columns!(),
        " FROM contacts WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.0)
    .bind(id.0)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(r) => Ok(attach_identities(conn, tenant, vec![r]).await?.pop()),
        None => Ok(None),
    }
}

/// Whether `id` is a contact of `tenant`.
pub async fn contact_exists(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: ContactId,
) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM contacts WHERE tenant_id = $1 AND id = $2)",
    )
    .bind(tenant.0)
    .bind(id.0)
    .fetch_one(conn)
    .await?)
}

/// Lock a contact for a write that will also touch its interactions (an agent's send):
/// `false` when it does not exist in the tenant. Every send takes the contact first, so two
/// sends to one contact queue behind each other instead of one locking the interaction and
/// then the contact while the other (through the Communication tab, or a message insert's
/// foreign-key check) locks them the other way round: that deadlocked and answered 500.
/// The lock is the one a message insert takes on its contact anyway (`NO KEY UPDATE`).
pub async fn lock_for_write(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: ContactId,
) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar::<_, i32>(
        "SELECT 1 FROM contacts WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE",
    )
    .bind(tenant.0)
    .bind(id.0)
    .fetch_optional(conn)
    .await?
    .is_some())
}

/// Escape `%`, `_` and `\` for a LIKE pattern.
pub(crate) fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What the directory search looks in: the name and every attribute value (nested ones
/// too), folded as message search folds words (see [`crate::search::fold`]).
pub fn search_text(name: &str, attributes: &Value) -> String {
    fn values(v: &Value, out: &mut String) {
        match v {
            Value::String(s) => {
                out.push('\n');
                out.push_str(&crate::search::fold(s));
            }
            Value::Number(n) => {
                out.push('\n');
                out.push_str(&n.to_string());
            }
            Value::Array(items) => items.iter().for_each(|i| values(i, out)),
            Value::Object(map) => map.values().for_each(|i| values(i, out)),
            Value::Bool(_) | Value::Null => {}
        }
    }
    let mut out = crate::search::fold(name);
    values(attributes, &mut out);
    // Enough for any directory search; a huge attribute does not bloat the index.
    if let Some((cut, _)) = out.char_indices().nth(20_000) {
        out.truncate(cut);
    }
    out
}

/// A directory search: every word of it in the contact's folded name and attribute
/// values (anywhere, so `gomez` finds "Gabi Gómez" and `acme-42` an account number), or
/// the whole of it in an identity's address, or — when it is a phone number in any
/// format (`+44 7700 900123`, `07700 900123`, `(555) 123-4567`, `0044 …`) — its digits
/// in a phone identity, without the leading trunk or international zeros.
#[derive(Debug, Clone)]
pub(crate) struct ContactSearch {
    words: Vec<String>,
    raw: String,
    digits: Option<String>,
}

impl ContactSearch {
    /// The search for `q`; `None` when it is blank.
    pub(crate) fn new(q: &str) -> Option<Self> {
        let q = q.trim();
        if q.is_empty() {
            return None;
        }
        let words = q
            .split_whitespace()
            .map(|w| format!("%{}%", like_escape(&crate::search::fold(w))))
            .take(8)
            .collect();
        let digits: String = q.chars().filter(char::is_ascii_digit).collect();
        let digits = digits.trim_start_matches('0');
        let phone = digits.len() >= 3
            && q.chars()
                .all(|c| c.is_ascii_digit() || " +-().".contains(c));
        Some(Self {
            words,
            raw: format!("%{}%", like_escape(q)),
            digits: phone.then(|| format!("%{digits}%")),
        })
    }

    /// The condition over contact `c` (its `tenant_id` and `id`), its parameters numbered
    /// from `first`; bind them with [`ContactSearch::bind`].
    pub(crate) fn condition(&self, first: usize) -> String {
        let words: Vec<String> = (0..self.words.len())
            .map(|k| format!("c.search_text LIKE ${}", first + k))
            .collect();
        let raw = first + self.words.len();
        let digits = raw + 1;
        format!(
            "(({words})
              OR (c.search_text IS NULL AND c.name ILIKE ${raw})
              OR EXISTS (SELECT 1 FROM channel_identities i
                         WHERE i.tenant_id = c.tenant_id AND i.contact_id = c.id
                           AND (i.address ILIKE ${raw}
                                OR (${digits}::text IS NOT NULL AND i.address LIKE ${digits}))))",
            words = words.join(" AND ")
        )
    }

    /// Bind the parameters of [`ContactSearch::condition`], in order.
    pub(crate) fn bind<'q, O>(
        &'q self,
        mut query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        for w in &self.words {
            query = query.bind(w.as_str());
        }
        query.bind(self.raw.as_str()).bind(self.digits.as_deref())
    }
}

/// A page of contacts ordered by name, optionally matching `q` (see [`ContactSearch`]).
pub async fn list_contacts(
    conn: &mut PgConnection,
    tenant: TenantId,
    q: Option<&str>,
    after: Option<ContactId>,
    limit: i64,
) -> Result<Vec<Contact>, StoreError> {
    let search = q.and_then(ContactSearch::new);
    let sql = format!(
        "SELECT {} FROM contacts c
         WHERE c.tenant_id = $1
           AND {}
           AND ($2::uuid IS NULL OR (c.name COLLATE parley_sort, c.id) >
                (SELECT name COLLATE parley_sort, id FROM contacts WHERE tenant_id = $1 AND id = $2))
         ORDER BY c.name COLLATE parley_sort, c.id
         LIMIT $3",
        contact_columns!(),
        search
            .as_ref()
            .map_or_else(|| "true".to_owned(), |s| s.condition(4)),
    );
    let mut query = sqlx::query_as::<_, ContactRow>(sqlx::AssertSqlSafe(sql))
        .bind(tenant.0)
        .bind(after.map(|a| a.0))
        .bind(limit);
    if let Some(s) = &search {
        query = s.bind(query);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    attach_identities(conn, tenant, rows).await
}

/// Fill in the search text of up to `batch` contacts stored before it existed; returns
/// how many. Run by the gateway in the background after an upgrade (all tenants).
pub async fn reindex_stale(conn: &mut PgConnection, batch: i64) -> Result<u64, StoreError> {
    let rows: Vec<(Uuid, String, Value)> = sqlx::query_as(
        "SELECT id, name, attributes FROM contacts WHERE search_text IS NULL
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(batch)
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let (ids, texts): (Vec<Uuid>, Vec<String>) = rows
        .iter()
        .map(|(id, name, attributes)| (*id, search_text(name, attributes)))
        .unzip();
    let done = sqlx::query(
        "UPDATE contacts c SET search_text = x.t
         FROM unnest($1::uuid[], $2::text[]) AS x(id, t) WHERE c.id = x.id",
    )
    .bind(&ids)
    .bind(&texts)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// The address a send to `contact` on `channel` goes to: the one named (`identity`), else
/// the one the contact last wrote from; with what the send checks (consent, window).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SendTarget {
    /// The identity.
    pub id: Uuid,
    /// Its address.
    pub address: String,
    /// Its status (consent).
    #[sqlx(try_from = "String")]
    pub status: IdentityStatus,
    /// When the contact last wrote from it.
    pub last_inbound_at: Option<DateTime<Utc>>,
    /// When the provider said the reply window closed.
    pub window_closed_at: Option<DateTime<Utc>>,
}

/// See [`SendTarget`].
pub async fn send_target(
    conn: &mut PgConnection,
    tenant: TenantId,
    contact: ContactId,
    channel: Channel,
    identity: Option<Uuid>,
) -> Result<Option<SendTarget>, StoreError> {
    Ok(sqlx::query_as::<_, SendTarget>(
        "SELECT id, address, status, last_inbound_at, window_closed_at FROM channel_identities
         WHERE tenant_id = $1 AND contact_id = $2 AND channel = $4
           AND ($3::uuid IS NULL OR id = $3)
         ORDER BY last_inbound_at DESC NULLS LAST, created_at LIMIT 1",
    )
    .bind(tenant.0)
    .bind(contact.0)
    .bind(identity)
    .bind(channel.as_str())
    .fetch_optional(conn)
    .await?)
}

/// Of `channels`, the one the contact last wrote on (or, if they never wrote, the one
/// of their oldest address).
pub async fn last_written_channel(
    conn: &mut PgConnection,
    tenant: TenantId,
    contact: ContactId,
    channels: &[Channel],
) -> Result<Option<Channel>, StoreError> {
    let spelt: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
    let found: Option<String> = sqlx::query_scalar(
        "SELECT channel FROM channel_identities
         WHERE tenant_id = $1 AND contact_id = $2 AND channel = ANY($3)
         ORDER BY last_inbound_at DESC NULLS LAST, created_at LIMIT 1",
    )
    .bind(tenant.0)
    .bind(contact.0)
    .bind(&spelt)
    .fetch_optional(conn)
    .await?;
    Ok(found.and_then(|c| c.parse().ok()))
}

/// Change a contact: a new name, and/or attributes merged in (a `null` value removes
/// that attribute).
pub async fn update_contact(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: ContactId,
    name: Option<&str>,
    attributes_patch: Option<&Value>,
) -> Result<Option<Contact>, StoreError> {
    let updated: Option<(String, Value)> = sqlx::query_as(
        "UPDATE contacts SET
            name = COALESCE($3, name),
            attributes = CASE WHEN $4::jsonb IS NULL THEN attributes
                              ELSE jsonb_strip_nulls(attributes || $4::jsonb) END,
            updated_at = now()
         WHERE tenant_id = $1 AND id = $2
         RETURNING name, attributes",
    )
    .bind(tenant.0)
    .bind(id.0)
    .bind(name)
    .bind(attributes_patch)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((name, attributes)) = updated else {
        return Ok(None);
    };
    sqlx::query("UPDATE contacts SET search_text = $3 WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.0)
        .bind(id.0)
        .bind(search_text(&name, &attributes))
        .execute(&mut *conn)
        .await?;
    get_contact(conn, tenant, id).await
}

/// Delete a contact with its identities, interactions and messages.
pub async fn delete_contact(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: ContactId,
) -> Result<bool, StoreError> {
    // Erasure: the contact's files and the text its events carried go with it, not only
    // the rows (a file's id still downloaded it, and resuming the event stream replayed
    // the messages for a week).
    let files: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT DISTINCT a.id, a.sha256 FROM messages m
         JOIN message_attachments ma ON ma.message_id = m.id
         JOIN attachments a ON a.id = ma.attachment_id AND a.tenant_id = $1
         WHERE m.tenant_id = $1 AND m.contact_id = $2",
    )
    .bind(tenant.0)
    .bind(id.0)
    .fetch_all(&mut *conn)
    .await?;
    let contact = id.0.to_string();
    sqlx::query(
        "UPDATE events SET payload = jsonb_build_object('erased', true, 'contact_id', $2::text)
         WHERE tenant_id = $1
           AND ($2 IN (payload->>'contact_id', payload->'message'->>'contact_id',
                       payload->'interaction'->>'contact_id'))",
    )
    .bind(tenant.0)
    .bind(&contact)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(crate::events::ERASED_CHANNEL)
        .execute(&mut *conn)
        .await?;
    let done = sqlx::query("DELETE FROM contacts WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.0)
        .bind(id.0)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    if !files.is_empty() {
        // Files no other message uses (an agent's upload may have gone to others too).
        let ids: Vec<Uuid> = files.iter().map(|(i, _)| *i).collect();
        sqlx::query(
            "DELETE FROM attachments a WHERE a.tenant_id = $1 AND a.id = ANY($2)
               AND NOT EXISTS (SELECT 1 FROM message_attachments ma WHERE ma.attachment_id = a.id)",
        )
        .bind(tenant.0)
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
        let shas: Vec<String> = files.into_iter().map(|(_, s)| s).collect();
        crate::attachments::delete_unreferenced(conn, tenant, &shas).await?;
    }
    Ok(true)
}

/// Add an address to a contact. The same address on the same channel cannot belong to two
/// contacts of a tenant: `StoreError::IdentityTaken` names the owner.
pub async fn add_identity(
    conn: &mut PgConnection,
    tenant: TenantId,
    contact: ContactId,
    channel: Channel,
    address: &str,
) -> Result<Identity, StoreError> {
    insert_identity(conn, tenant, contact, channel, address, None).await
}

/// [`add_identity`] for an address the contact has just written from, sent at `sent_at`
/// (now when the provider does not say): its last inbound time is set as it is added.
pub(crate) async fn add_inbound_identity(
    conn: &mut PgConnection,
    tenant: TenantId,
    contact: ContactId,
    channel: Channel,
    address: &str,
    sent_at: Option<DateTime<Utc>>,
) -> Result<Identity, StoreError> {
    insert_identity(conn, tenant, contact, channel, address, Some(sent_at)).await
}

async fn insert_identity(
    conn: &mut PgConnection,
    tenant: TenantId,
    contact: ContactId,
    channel: Channel,
    address: &str,
    inbound: Option<Option<DateTime<Utc>>>,
) -> Result<Identity, StoreError> {
    let row = sqlx::query_as::<_, IdentityRow>(concat!(
        "INSERT INTO channel_identities (id, tenant_id, contact_id, channel, address,
                                         last_inbound_at)
         VALUES ($1, $2, $3, $4, $5,
                 CASE WHEN $6 THEN parley_inbound_at($7) END)
         ON CONFLICT ON CONSTRAINT channel_identities_address_key DO NOTHING
         RETURNING ",
        identity_columns!()
    ))
    .bind(IdentityId::new().0)
    .bind(tenant.0)
    .bind(contact.0)
    .bind(channel.as_str())
    .bind(address)
    .bind(inbound.is_some())
    .bind(inbound.flatten())
    .fetch_optional(&mut *conn)
    .await
    .map_err(StoreError::from_db)?;
    match row {
        Some(r) => Ok(r.into()),
        None => {
            let existing = find_identity(conn, tenant, channel, address)
                .await?
                .ok_or(StoreError::NotFound("identity"))?;
            Err(StoreError::IdentityTaken {
                owner: existing.contact_id,
                identity: existing.id,
            })
        }
    }
}

/// The identity with this channel and address, if any.
pub async fn find_identity(
    conn: &mut PgConnection,
    tenant: TenantId,
    channel: Channel,
    address: &str,
) -> Result<Option<Identity>, StoreError> {
    let row = sqlx::query_as::<_, IdentityRow>(concat!(
        "SELECT ",
        identity_columns!(),
        " FROM channel_identities WHERE tenant_id = $1 AND channel = $2 AND address = $3"
    ))
    .bind(tenant.0)
    .bind(channel.as_str())
    .bind(address)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Identity::from))
}

/// Remove an address from a contact.
pub async fn remove_identity(
    conn: &mut PgConnection,
    tenant: TenantId,
    contact: ContactId,
    identity: IdentityId,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "DELETE FROM channel_identities WHERE tenant_id = $1 AND contact_id = $2 AND id = $3",
    )
    .bind(tenant.0)
    .bind(contact.0)
    .bind(identity.0)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Change an identity's reachability state (WhatsApp Connect / Validate / provider
/// errors), keeping the provider's error or the consent evidence, and tell desktops with a
/// `contact.identity_status` event. Returns the identity, or `None` if it doesn't exist.
pub async fn set_identity_status(
    conn: &mut PgConnection,
    tenant: TenantId,
    identity: IdentityId,
    status: IdentityStatus,
    last_error: Option<&Value>,
    consent: Option<&Value>,
) -> Result<Option<Identity>, StoreError> {
    let row = sqlx::query_as::<_, IdentityRow>(concat!(
        "UPDATE channel_identities SET status = $3,
            last_error = CASE WHEN $3 = 'invalid' THEN $4 ELSE NULL END,
            consent = COALESCE($5, consent)
         WHERE tenant_id = $1 AND id = $2 RETURNING ",
        identity_columns!()
    ))
    .bind(tenant.0)
    .bind(identity.0)
    .bind(status.as_str())
    .bind(last_error)
    .bind(consent)
    .fetch_optional(&mut *conn)
    .await
    .map_err(StoreError::from_db)?;
    let Some(row) = row else { return Ok(None) };
    let identity: Identity = row.into();
    crate::events::append(
        conn,
        tenant,
        crate::events::Audience::Tenant,
        "contact.identity_status",
        &serde_json::json!({
            "contact_id": identity.contact_id, "identity_id": identity.id,
            "status": identity.status, "last_error": identity.last_error,
        }),
    )
    .await?;
    Ok(Some(identity))
}

/// The consent evidence recorded on an identity, if any.
pub async fn identity_consent(
    conn: &mut PgConnection,
    tenant: TenantId,
    identity: IdentityId,
) -> Result<Option<Value>, StoreError> {
    Ok(sqlx::query_scalar::<_, Option<Value>>(
        "SELECT consent FROM channel_identities WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.0)
    .bind(identity.0)
    .fetch_optional(conn)
    .await?
    .flatten())
}

/// The provider says the 24-hour window is closed for this address (error 131047).
pub async fn close_window(
    conn: &mut PgConnection,
    tenant: TenantId,
    contact: ContactId,
    channel: Channel,
    address: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE channel_identities SET window_closed_at = now()
         WHERE tenant_id = $1 AND contact_id = $2 AND channel = $3 AND address = $4",
    )
    .bind(tenant.0)
    .bind(contact.0)
    .bind(channel.as_str())
    .bind(address)
    .execute(conn)
    .await?;
    Ok(())
}
