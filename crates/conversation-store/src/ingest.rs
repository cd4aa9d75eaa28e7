//! The inbound write: one message from a contact, with everything that belongs to it, in
//! the caller's transaction. Channel connectors parse; this stores.

use chrono::{DateTime, Utc};
use parley_core::{
    AttachmentId, ContactId, IdentityId, MessageId, TenantId,
    channel::Channel,
    state::{IdentityStatus, InteractionState},
};
use serde_json::Value;
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use crate::{
    StoreError,
    interactions::{self, Interaction},
    messages::{self, Direction, Message, NewMessage},
};

/// An inbound message as a connector parsed it.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The channel.
    pub channel: Channel,
    /// The tenant's channel account it arrived on.
    pub channel_account_id: Option<Uuid>,
    /// The sender's normalised address.
    pub address: String,
    /// The sender's profile name, if the provider sent one.
    pub profile_name: Option<String>,
    /// The provider's message id (replays are no-ops).
    pub provider_message_id: Option<String>,
    /// Kind.
    pub kind: String,
    /// Text.
    pub body: Option<String>,
    /// Structured content.
    pub payload: Value,
    /// Attachments already stored.
    pub attachment_ids: Vec<AttachmentId>,
    /// The provider id of the message this replies to, if any.
    pub reply_to_provider_id: Option<String>,
    /// When the contact sent it, as the provider says. The identity's last inbound time
    /// (which opens WhatsApp's 24-hour window) is this, never later than now: a webhook
    /// delivered late, e.g. retried after an outage, must not open the window anew.
    pub sent_at: Option<DateTime<Utc>>,
}

impl Inbound {
    /// The message row this inbound message becomes.
    fn message(
        &self,
        contact_id: ContactId,
        interaction: parley_core::InteractionId,
        reply_to_id: Option<MessageId>,
    ) -> NewMessage {
        NewMessage {
            contact_id,
            interaction_id: Some(interaction),
            channel: self.channel,
            direction: Direction::Inbound,
            sender_user_id: None,
            kind: self.kind.clone(),
            body: self.body.clone(),
            payload: self.payload.clone(),
            channel_account_id: self.channel_account_id,
            provider_message_id: self.provider_message_id.clone(),
            reply_to_id,
            status: "received".to_owned(),
            attachment_ids: self.attachment_ids.clone(),
        }
    }
}

/// What ingesting did.
#[derive(Debug, Clone)]
pub struct Ingested {
    /// The contact (found or created).
    pub contact_id: ContactId,
    /// Whether the contact was created by this message.
    pub contact_created: bool,
    /// The interaction the message is attached to.
    pub interaction: Interaction,
    /// Whether that interaction was created by this message.
    pub interaction_created: bool,
    /// The sender identity's status (e.g. `connect_requested`); `None` for a replay.
    pub identity_status: Option<IdentityStatus>,
    /// The stored message; `None` for a replay of one already stored.
    pub message: Option<Message>,
}

/// Store an inbound message: find or create the contact and identity, attach to the open
/// interaction or create a queued one, insert the message (a duplicate provider id is a
/// no-op), record the contact's last inbound time, append events.
pub async fn ingest_inbound(
    conn: &mut PgConnection,
    tenant: TenantId,
    inbound: &Inbound,
) -> Result<Ingested, StoreError> {
    // A replay must not open a new interaction for an old message.
    if let Some(pid) = &inbound.provider_message_id {
        let existing: Option<(Uuid, Option<Uuid>)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT contact_id, interaction_id FROM messages WHERE {}",
            by_provider_id(inbound.channel_account_id)
        )))
        .bind(tenant.0)
        .bind(inbound.channel_account_id)
        .bind(pid)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((contact, Some(interaction))) = existing
            && let Some(i) =
                interactions::get(conn, tenant, parley_core::InteractionId(interaction)).await?
        {
            return Ok(Ingested {
                contact_id: ContactId(contact),
                contact_created: false,
                interaction: i,
                interaction_created: false,
                identity_status: None,
                message: None,
            });
        }
    }

    let (contact_id, identity_id, identity_status, contact_created) =
        find_or_create_contact(conn, tenant, inbound).await?;
    let (mut interaction, interaction_created) = interactions::open_or_create(
        conn,
        tenant,
        contact_id,
        inbound.channel,
        Some(identity_id),
        inbound.channel_account_id,
    )
    .await?;
    // A new interaction (the contact's first, or the first after a Done) is announced to
    // supervisors (queue views); agents learn of it from its `message.created`, which
    // names it, and from their offer.
    if interaction_created {
        crate::events::append(
            conn,
            tenant,
            crate::events::Audience::Supervisors,
            "interaction.created",
            &serde_json::json!({ "interaction": interaction }),
        )
        .await?;
    }
    // Async chat: a message on an ended (not done) interaction resumes it with its agent.
    if interaction.state == InteractionState::Ended
        && let Some(resumed) =
            interactions::resume(conn, tenant, parley_core::InteractionId(interaction.id)).await?
    {
        interaction = resumed;
    }
    let reply_to_id = match &inbound.reply_to_provider_id {
        Some(pid) => sqlx::query_scalar::<_, Uuid>(AssertSqlSafe(format!(
            "SELECT id FROM messages WHERE {}",
            by_provider_id(inbound.channel_account_id)
        )))
        .bind(tenant.0)
        .bind(inbound.channel_account_id)
        .bind(pid)
        .fetch_optional(&mut *conn)
        .await?
        .map(MessageId),
        None => None,
    };
    let message = messages::insert(
        conn,
        tenant,
        &inbound.message(
            contact_id,
            parley_core::InteractionId(interaction.id),
            reply_to_id,
        ),
    )
    .await?;
    Ok(Ingested {
        contact_id,
        contact_created,
        interaction,
        interaction_created,
        // The table allows only these spellings.
        identity_status: IdentityStatus::parse(&identity_status),
        message,
    })
}

/// The condition finding a message by its provider id (`$1` tenant, `$2` account, `$3`
/// provider id), spelled so that the unique index answers it: `IS NOT DISTINCT FROM`
/// would leave only the tenant as an index condition and walk every message of the tenant.
fn by_provider_id(account: Option<Uuid>) -> &'static str {
    match account {
        Some(_) => "tenant_id = $1 AND channel_account_id = $2 AND provider_message_id = $3",
        None => {
            "tenant_id = $1 AND channel_account_id IS NULL AND $2::uuid IS NULL
               AND provider_message_id = $3"
        }
    }
}

/// The sender's contact and identity (created when new), with the identity's last inbound
/// time moved to now: `(contact, identity, identity status, contact created)`.
async fn find_or_create_contact(
    conn: &mut PgConnection,
    tenant: TenantId,
    inbound: &Inbound,
) -> Result<(ContactId, IdentityId, String, bool), StoreError> {
    // The common case, a known sender, in one round trip.
    if let Some((contact, identity, status)) = bump_last_inbound(conn, tenant, inbound).await? {
        return Ok((ContactId(contact), IdentityId(identity), status, false));
    }
    let (contact, identity, created, status) = create_contact(conn, tenant, inbound).await?;
    let status = match status {
        Some(status) => status,
        // Another transaction added the identity: move its last inbound time.
        None => {
            bump_last_inbound(conn, tenant, inbound)
                .await?
                .ok_or(StoreError::NotFound("identity"))?
                .2
        }
    };
    Ok((contact, identity, status, created))
}

/// Move the sender's identity's last inbound time to now, if the identity exists:
/// `(contact, identity, identity status)`.
async fn bump_last_inbound(
    conn: &mut PgConnection,
    tenant: TenantId,
    inbound: &Inbound,
) -> Result<Option<(Uuid, Uuid, String)>, StoreError> {
    Ok(sqlx::query_as(
        "UPDATE channel_identities
         SET last_inbound_at = GREATEST(last_inbound_at, parley_inbound_at($4))
         WHERE tenant_id = $1 AND channel = $2 AND address = $3
         RETURNING contact_id, id, status",
    )
    .bind(tenant.0)
    .bind(inbound.channel.as_str())
    .bind(&inbound.address)
    .bind(inbound.sent_at)
    .fetch_optional(&mut *conn)
    .await?)
}

/// A new contact with the sender's identity, its last inbound time set: `(contact,
/// identity, created, the identity's status)`. When another transaction added the
/// identity first, its contact and identity, not created, and no status (its last
/// inbound time is still to be moved).
async fn create_contact(
    conn: &mut PgConnection,
    tenant: TenantId,
    inbound: &Inbound,
) -> Result<(ContactId, IdentityId, bool, Option<String>), StoreError> {
    let name = inbound
        .profile_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or(&inbound.address)
        .chars()
        .take(200)
        .collect::<String>();
    let contact = ContactId::new();
    sqlx::query("INSERT INTO contacts (id, tenant_id, name, search_text) VALUES ($1, $2, $3, $4)")
        .bind(contact.0)
        .bind(tenant.0)
        .bind(&name)
        .bind(crate::contacts::search_text(&name, &Value::Null))
        .execute(&mut *conn)
        .await?;
    match crate::contacts::add_inbound_identity(
        conn,
        tenant,
        contact,
        inbound.channel,
        &inbound.address,
        inbound.sent_at,
    )
    .await
    {
        Ok(identity) => Ok((
            contact,
            IdentityId(identity.id),
            true,
            Some(identity.status.as_str().to_owned()),
        )),
        // Another transaction created it first (it committed while we waited on the
        // unique index): use theirs and drop ours.
        Err(StoreError::IdentityTaken { owner, identity }) => {
            sqlx::query("DELETE FROM contacts WHERE tenant_id = $1 AND id = $2")
                .bind(tenant.0)
                .bind(contact.0)
                .execute(&mut *conn)
                .await?;
            Ok((ContactId(owner), IdentityId(identity), false, None))
        }
        Err(e) => Err(e),
    }
}

/// What the database knows of a sender, for storing many messages at once.
#[derive(Debug, Clone)]
pub struct Known {
    /// The contact.
    pub contact_id: ContactId,
    /// The sender's identity.
    pub identity_id: IdentityId,
    /// The identity's status (e.g. `connect_requested`).
    pub identity_status: IdentityStatus,
    /// The contact's interaction on this channel that is not done, with its state.
    pub open_interaction: Option<(parley_core::InteractionId, InteractionState)>,
    /// The provider id is already stored: nothing to do.
    pub replay: bool,
}

/// Look up, in one round trip, what `ingest_known` needs for each message: `None` for a
/// sender not yet known, or a message without a channel account or provider id (store
/// those with [`ingest_inbound`]). Moves each known sender's last inbound time to now,
/// as storing the message will (not for a replay).
pub async fn lookup_known(
    conn: &mut PgConnection,
    items: &[(TenantId, &Inbound)],
) -> Result<Vec<Option<Known>>, StoreError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    #[derive(sqlx::FromRow)]
    struct Row {
        ord: i64,
        contact_id: Uuid,
        identity_id: Uuid,
        status: String,
        interaction_id: Option<Uuid>,
        interaction_state: Option<String>,
        replay: bool,
    }
    // With the known senders' last inbound time moved to now (not for a message already
    // stored: a provider's retry of an old webhook must not reopen the 24-hour window),
    // their identity rows locked in id order so two batches never wait on each other in a
    // circle. A message that then takes the full path moves it again; within one
    // transaction that changes nothing.
    let source = crate::batch_rows(
        &[
            "$1::uuid[]",
            "$2::text[]",
            "$3::text[]",
            "$4::uuid[]",
            "$5::text[]",
            "$6::timestamptz[]",
        ],
        "tenant_id, channel, address, account, pmid, sent_at",
        items.len(),
    );
    let rows = sqlx::query_as::<_, Row>(AssertSqlSafe(format!(
        "WITH found AS (
           SELECT x.ord, ci.contact_id, ci.id AS identity_id, ci.status,
                  i.id AS interaction_id, i.state AS interaction_state,
                  parley_inbound_at(x.sent_at) AS sent_at,
                  x.account IS NOT NULL AND x.pmid IS NOT NULL AS keyed,
                  EXISTS (SELECT 1 FROM messages m
                          WHERE m.tenant_id = x.tenant_id AND m.channel_account_id = x.account
                            AND m.provider_message_id = x.pmid) AS replay
           FROM {source}
           JOIN channel_identities ci
             ON ci.tenant_id = x.tenant_id AND ci.channel = x.channel AND ci.address = x.address
           LEFT JOIN interactions i
             ON i.tenant_id = x.tenant_id AND i.contact_id = ci.contact_id
            AND i.channel = x.channel AND i.state <> 'done'),
         bumped AS (
           UPDATE channel_identities ci SET last_inbound_at = GREATEST(ci.last_inbound_at, s.at)
           FROM (SELECT c.id FROM channel_identities c
                 WHERE c.id IN (SELECT identity_id FROM found WHERE keyed AND NOT replay)
                 ORDER BY c.id FOR NO KEY UPDATE OF c) AS locked,
                (SELECT identity_id, max(sent_at) AS at FROM found
                 WHERE keyed AND NOT replay GROUP BY identity_id) AS s
           WHERE ci.id = locked.id AND s.identity_id = ci.id
           RETURNING 1)
         SELECT ord, contact_id, identity_id, status, interaction_id, interaction_state, replay
         FROM found"
    )))
    .bind(items.iter().map(|(t, _)| t.0).collect::<Vec<_>>())
    .bind(
        items
            .iter()
            .map(|(_, m)| m.channel.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        items
            .iter()
            .map(|(_, m)| m.address.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        items
            .iter()
            .map(|(_, m)| m.channel_account_id)
            .collect::<Vec<_>>(),
    )
    .bind(
        items
            .iter()
            .map(|(_, m)| m.provider_message_id.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(items.iter().map(|(_, m)| m.sent_at).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let mut known = vec![None; items.len()];
    for r in rows {
        let k = usize::try_from(r.ord - 1).unwrap_or(usize::MAX);
        let keyed = items.get(k).is_some_and(|(_, m)| {
            m.channel_account_id.is_some() && m.provider_message_id.is_some()
        });
        if let Some(slot) = known.get_mut(k).filter(|_| keyed) {
            *slot = Some(Known {
                contact_id: ContactId(r.contact_id),
                identity_id: IdentityId(r.identity_id),
                // The table allows only these spellings.
                identity_status: IdentityStatus::parse(&r.status)
                    .unwrap_or(IdentityStatus::Unverified),
                open_interaction: r
                    .interaction_id
                    .zip(
                        r.interaction_state
                            .as_deref()
                            .and_then(InteractionState::parse),
                    )
                    .map(|(id, state)| (parley_core::InteractionId(id), state)),
                replay: r.replay,
            });
        }
    }
    Ok(known)
}

/// Store messages of known senders whose interaction is open (not ended, not done), as
/// [`ingest_inbound`] would, in a fixed number of round trips ([`messages::insert_many`]),
/// after [`lookup_known`] (in the same transaction) found them and moved their
/// identities' last inbound time. Returns each stored message (`None` for a replay).
pub async fn ingest_known(
    conn: &mut PgConnection,
    items: &[(TenantId, &Inbound, &Known)],
) -> Result<Vec<Option<Message>>, StoreError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    for (_, inbound, k) in items {
        if inbound.reply_to_provider_id.is_some() {
            return Err(StoreError::Invalid {
                field: "reply_to",
                message: "ingest_known does not resolve replies; use ingest_inbound".to_owned(),
            });
        }
        match &k.open_interaction {
            Some((_, state)) if *state != InteractionState::Ended => {}
            _ => {
                return Err(StoreError::Invalid {
                    field: "interaction",
                    message: "ingest_known needs an open interaction".to_owned(),
                });
            }
        }
    }
    let new: Vec<NewMessage> = items
        .iter()
        .map(|(_, inbound, k)| {
            k.open_interaction
                .as_ref()
                .map(|(interaction, _)| inbound.message(k.contact_id, *interaction, None))
                .ok_or(StoreError::NotFound("interaction"))
        })
        .collect::<Result<_, _>>()?;
    let pairs: Vec<(TenantId, &NewMessage)> = items
        .iter()
        .zip(&new)
        .map(|((t, _, _), n)| (*t, n))
        .collect();
    messages::insert_many(conn, &pairs).await
}
