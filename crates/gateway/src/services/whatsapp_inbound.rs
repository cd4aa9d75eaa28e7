//! Storing what WhatsApp webhooks carry: messages (a set-based path for plain messages
//! of known senders, the full path for the rest), consent, media to fetch, delivery and
//! template statuses. Called by the group-commit writer (`crate::ingest`) in its
//! transaction; no HTTP here.

use channel_connector::{
    status,
    whatsapp::webhook::{self, InboundMessage},
};
use conversation_store::{
    StoreError, contacts,
    ingest::{Inbound, ingest_inbound},
};
use parley_core::state::{IdentityStatus, InteractionState};
use parley_core::{ContactId, TenantId, channel::Channel};
use uuid::Uuid;

use crate::error::ApiError;

/// One verified webhook's content, for [`apply_batch`].
pub struct Delivery<'a> {
    pub tenant: TenantId,
    pub account: Uuid,
    pub envelope: &'a webhook::Envelope,
}

/// Store everything a batch of webhooks carries, in the caller's transaction (the
/// group-commit writer's: see `crate::ingest`).
///
/// Plain messages (a phone number, no business-scoped id, no media, no reply) from known
/// senders already in an open conversation are stored together in a fixed number of
/// statements; every other message takes the full path, one by one. A sender with any
/// message on the full path has all its messages of the batch there, so each contact's
/// messages keep their order.
pub async fn apply_batch(
    tx: &mut sqlx::PgConnection,
    batch: &[Delivery<'_>],
) -> Result<(), ApiError> {
    use std::collections::HashSet;
    let sender = |d: &Delivery<'_>, m: &InboundMessage| {
        (
            d.tenant.0,
            m.phone
                .clone()
                .or_else(|| m.bsuid.clone())
                .unwrap_or_default(),
        )
    };
    // (An opt-out word changes the address's consent: the full path records it.)
    let plain = |m: &InboundMessage| {
        m.phone.is_some()
            && m.bsuid.is_none()
            && m.media.is_none()
            && m.reply_to.is_none()
            && !crate::services::consent::is_opt_out(m.body.as_deref())
    };
    let mut full_path: HashSet<(Uuid, String)> = HashSet::new();
    for d in batch {
        for m in d.envelope.messages.iter().filter(|m| !plain(m)) {
            full_path.insert(sender(d, m));
        }
    }
    // (delivery, message) of each candidate for the short path.
    let mut at: Vec<(usize, usize)> = Vec::new();
    let mut inbound: Vec<(TenantId, Inbound)> = Vec::new();
    for (di, d) in batch.iter().enumerate() {
        for (mi, m) in d.envelope.messages.iter().enumerate() {
            let Some(phone) = &m.phone else { continue };
            if !plain(m) || full_path.contains(&sender(d, m)) {
                continue;
            }
            at.push((di, mi));
            inbound.push((d.tenant, inbound_of(d.account, m, phone.clone())));
        }
    }
    let pairs: Vec<(TenantId, &Inbound)> = inbound.iter().map(|(t, i)| (*t, i)).collect();
    let known = conversation_store::ingest::lookup_known(tx, &pairs).await?;
    for (k, (di, mi)) in known.iter().zip(&at) {
        let short = k.as_ref().is_some_and(|k| {
            k.replay
                || (!matches!(
                    k.identity_status,
                    IdentityStatus::ConnectRequested
                        | IdentityStatus::OptedOut
                        | IdentityStatus::Declined
                ) && k
                    .open_interaction
                    .as_ref()
                    .is_some_and(|(_, state)| *state != InteractionState::Ended))
        });
        if !short {
            let d = &batch[*di];
            full_path.insert(sender(d, &d.envelope.messages[*mi]));
        }
    }
    let mut done: HashSet<(usize, usize)> = HashSet::new();
    let mut seen: HashSet<(Uuid, Uuid, String)> = HashSet::new();
    let mut short = Vec::new();
    for ((k, (di, mi)), (tenant, inb)) in known.iter().zip(&at).zip(&inbound) {
        let d = &batch[*di];
        let m = &d.envelope.messages[*mi];
        let Some(k) = k else { continue };
        if full_path.contains(&sender(d, m)) {
            continue;
        }
        done.insert((*di, *mi));
        // A replay, or the same message twice in this batch: nothing to store.
        if k.replay || !seen.insert((tenant.0, d.account, m.provider_message_id.clone())) {
            continue;
        }
        short.push((*tenant, inb, k));
    }
    conversation_store::ingest::ingest_known(tx, &short).await?;
    for (di, d) in batch.iter().enumerate() {
        for (mi, m) in d.envelope.messages.iter().enumerate() {
            if !done.contains(&(di, mi)) {
                ingest_one(tx, d.tenant, d.account, m).await?;
            }
        }
        for st in &d.envelope.statuses {
            status::apply(tx, d.tenant, d.account, st).await?;
        }
        for t in &d.envelope.template_statuses {
            let changed = notification_templates::store::apply_provider_status(
                tx,
                d.tenant,
                d.account,
                &t.event,
                t.template_id.as_deref(),
                t.name.as_deref(),
                t.language.as_deref(),
                t.reason.as_deref(),
            )
            .await?;
            tracing::info!(account = %d.account, event = %t.event, changed, "template status from the provider");
        }
    }
    Ok(())
}

/// The store's view of a WhatsApp message from `address`.
fn inbound_of(account: Uuid, m: &InboundMessage, address: String) -> Inbound {
    Inbound {
        channel: Channel::Whatsapp,
        channel_account_id: Some(account),
        address,
        profile_name: m.profile_name.clone(),
        provider_message_id: Some(m.provider_message_id.clone()),
        kind: m.kind.clone(),
        body: m.body.clone(),
        payload: m.payload.clone(),
        attachment_ids: Vec::new(),
        reply_to_provider_id: m.reply_to.clone(),
        sent_at: m
            .sent_at
            .and_then(|s| chrono::DateTime::from_timestamp(s, 0)),
    }
}

async fn ingest_one(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    account: Uuid,
    m: &InboundMessage,
) -> Result<(), ApiError> {
    // Prefer the business-scoped id when we know it (stable per business); otherwise the
    // phone number. The other one is added to the same contact.
    let mut primary = m.phone.clone();
    let mut secondary = m.bsuid.clone();
    if let Some(b) = &m.bsuid
        && (m.phone.is_none()
            || contacts::find_identity(conn, tenant, Channel::Whatsapp, b)
                .await?
                .is_some())
    {
        primary = Some(b.clone());
        secondary = m.phone.clone();
    }
    let Some(address) = primary else {
        return Ok(());
    };
    let address_used = address.clone();
    let got = ingest_inbound(conn, tenant, &inbound_of(account, m, address)).await?;
    if let Some(stored) = &got.message {
        // Consent first: a "No" to a Connect request must not read as writing again
        // after declining.
        let signal = if crate::services::consent::is_opt_out(stored.body.as_deref()) {
            crate::services::consent::ConsentSignal::OptOut
        } else {
            crate::services::consent::ConsentSignal::Other
        };
        crate::services::consent::apply_consent(
            conn,
            tenant,
            Channel::Whatsapp,
            &address_used,
            stored,
            signal,
        )
        .await?;
        if got.identity_status == Some(IdentityStatus::ConnectRequested) {
            crate::services::consent::apply_connect_answer(conn, tenant, &address_used, stored)
                .await?;
        }
    }
    if let (Some(stored), Some((media_id, mime))) = (&got.message, &m.media) {
        let filename = m.payload["media"]["filename"].as_str();
        channel_connector::media::enqueue(
            conn,
            tenant,
            stored.id,
            account,
            media_id,
            mime.as_deref(),
            filename,
        )
        .await?;
    }
    if let Some(other) = secondary {
        match contacts::add_identity(
            conn,
            tenant,
            ContactId(got.contact_id.0),
            Channel::Whatsapp,
            &other,
        )
        .await
        {
            Ok(_) | Err(StoreError::IdentityTaken { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
