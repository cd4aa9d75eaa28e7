//! Storing an inbound SMS (Twilio): the message once per `MessageSid`, what it says about
//! consent, and its MMS media to fetch. Called in the webhook's transaction; no HTTP here.

use channel_connector::twilio_sms::{self, InboundMessage};
use conversation_store::ingest::{Inbound, ingest_inbound};
use parley_core::{TenantId, channel::Channel};
use serde_json::json;
use uuid::Uuid;

use crate::{
    error::ApiError,
    services::consent::{ConsentSignal, apply_consent},
};

/// Store one inbound SMS in the caller's transaction: the message (once per
/// `MessageSid`), and what it says about consent.
pub async fn store_inbound(
    tx: &mut sqlx::PgConnection,
    tenant: TenantId,
    account_id: Uuid,
    m: &InboundMessage,
) -> Result<(), ApiError> {
    // A number as Twilio sends it (E.164), or whatever else it sends (a short code, an
    // alphanumeric sender): never refused for being unusual.
    let address = parley_core::channel::parse_e164(&m.from).unwrap_or_else(|_| m.from.clone());
    let mut raw = m.params.clone();
    raw.remove("Body");
    let media: Vec<serde_json::Value> = m
        .media
        .iter()
        .map(|(url, mime)| json!({"url": url, "mime_type": mime}))
        .collect();
    let inbound = Inbound {
        channel: Channel::Sms,
        channel_account_id: Some(account_id),
        address: address.clone(),
        profile_name: None,
        provider_message_id: Some(m.message_sid.clone()),
        kind: if m.media.is_empty() { "text" } else { "media" }.to_owned(),
        body: m
            .body
            .clone()
            .filter(|b| !b.is_empty() || m.media.is_empty()),
        payload: json!({ "media": media, "raw": raw }),
        attachment_ids: Vec::new(),
        reply_to_provider_id: None,
        sent_at: None,
    };
    let got = ingest_inbound(tx, tenant, &inbound).await?;
    if let Some(stored) = &got.message {
        let text = m.body.as_deref().unwrap_or_default();
        let signal = match m.opt_out_type.as_deref() {
            Some(t) if t.eq_ignore_ascii_case("STOP") => ConsentSignal::OptOut,
            Some(t) if t.eq_ignore_ascii_case("START") => ConsentSignal::OptIn,
            _ if twilio_sms::is_opt_out(text) => ConsentSignal::OptOut,
            _ if twilio_sms::is_opt_in(text) => ConsentSignal::OptIn,
            _ => ConsentSignal::Other,
        };
        apply_consent(tx, tenant, Channel::Sms, &address, stored, signal).await?;
        // MMS media are fetched after the answer, into attachments of this message.
        for (url, mime) in &m.media {
            channel_connector::media::enqueue(
                tx,
                tenant,
                stored.id,
                account_id,
                url,
                mime.as_deref(),
                None,
            )
            .await?;
        }
    }
    Ok(())
}
