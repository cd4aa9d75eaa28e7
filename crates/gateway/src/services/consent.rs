//! Consent on a contact's address: opt-out and opt-in words, the answer to a Connect
//! request, and the check every send makes (applied by the webhooks, checked by the
//! send paths).

use channel_connector::whatsapp::request;
use chrono::Utc;
use conversation_store::{contacts, messages::Message};
use parley_core::state::IdentityStatus;
use parley_core::{IdentityId, TenantId, channel::Channel};
use serde_json::{Value, json};

use crate::error::ApiError;

/// Words that, alone in a message, mean "send me nothing more" (carriers' and Meta's
/// usual set, in the languages Parley's contacts write in).
const OPT_OUT: &[&str] = &[
    "stop",
    "stopall",
    "unsubscribe",
    "cancel",
    "end",
    "quit",
    "opt out",
    "opt-out",
    "optout",
    "baja",
    "alto",
    "parar",
    "sair",
    "arret",
    "arrêt",
    "stopp",
    "desinscrever",
    "cancelar",
];

/// Whether an inbound text is an opt-out word (alone, any case, trailing punctuation
/// ignored).
pub fn is_opt_out(text: Option<&str>) -> bool {
    let t = text.unwrap_or_default().trim().to_lowercase();
    let t = t.trim_end_matches(['.', '!']);
    OPT_OUT.contains(&t)
}

/// What an inbound message says about consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentSignal {
    /// An opt-out word (STOP, …).
    OptOut,
    /// An opt-in word after an opt-out (SMS: START, UNSTOP, YES).
    OptIn,
    /// Anything else.
    Other,
}

/// After a contact's message is stored: an opt-out word opts the address out. On
/// WhatsApp any other message from an address that had opted out or declined reopens it
/// (`unverified`: the conversation goes on, a new Connect may be asked); on SMS only an
/// opt-in word does (the carrier's block lasts until START). Called in the webhook's
/// transaction, for every inbound message.
pub async fn apply_consent(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    channel: Channel,
    address: &str,
    message: &Message,
    signal: ConsentSignal,
) -> Result<(), ApiError> {
    let Some(ident) = contacts::find_identity(conn, tenant, channel, address).await? else {
        return Ok(());
    };
    let reopens = match (signal, channel) {
        (ConsentSignal::OptIn, _) => ident.status == IdentityStatus::OptedOut,
        (ConsentSignal::Other, Channel::Whatsapp) => {
            matches!(
                ident.status,
                IdentityStatus::OptedOut | IdentityStatus::Declined
            )
        }
        _ => false,
    };
    let (status, note) = match signal {
        ConsentSignal::OptOut if ident.status == IdentityStatus::OptedOut => return Ok(()),
        ConsentSignal::OptOut => (IdentityStatus::OptedOut, "opted_out_at"),
        _ if reopens => (IdentityStatus::Unverified, "reopened_at"),
        _ => return Ok(()),
    };
    let mut consent = contacts::identity_consent(conn, tenant, IdentityId(ident.id))
        .await?
        .unwrap_or_else(|| json!({}));
    if let Some(o) = consent.as_object_mut() {
        o.insert(note.into(), json!(Utc::now()));
        o.insert(format!("{note}_message_id"), json!(message.id));
    }
    contacts::set_identity_status(
        conn,
        tenant,
        IdentityId(ident.id),
        status,
        None,
        Some(&consent),
    )
    .await?;
    Ok(())
}

/// Refuse a send to an address that opted out or declined (422 naming why). Templates
/// (business-initiated) also need an opt-in: a Connect the contact said yes to, or the
/// contact having written within the 24-hour window.
pub fn check_consent(
    status: IdentityStatus,
    window_open: bool,
    business_initiated: bool,
) -> Result<(), ApiError> {
    match status {
        IdentityStatus::OptedOut => Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "contact_opted_out",
            "the contact opted out (wrote STOP); nothing is sent until they write again (on SMS: until they write START)",
        )),
        IdentityStatus::Declined => Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "contact_declined",
            "the contact declined to connect; nothing is sent until they write again",
        )),
        IdentityStatus::Connected => Ok(()),
        _ if business_initiated && !window_open => Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "no_opt_in",
            "the contact has not opted in: Connect and Validate their WhatsApp address first, or wait for them to write",
        )),
        _ => Ok(()),
    }
}

const YES: &[&str] = &["yes", "y", "sí", "si", "oui", "ja", "sim", "да", "نعم"];
const NO: &[&str] = &["no", "n", "non", "nein", "não", "nao", "нет", "لا"];

/// If the contact was asked to connect, their answer (the template's quick reply, or a
/// plain yes/no) connects or declines the identity. Called in the webhook's transaction.
pub async fn apply_connect_answer(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    address: &str,
    message: &Message,
) -> Result<(), ApiError> {
    let Some(ident) = contacts::find_identity(conn, tenant, Channel::Whatsapp, address).await?
    else {
        return Ok(());
    };
    if ident.status != IdentityStatus::ConnectRequested {
        return Ok(());
    }
    let payload = message
        .payload
        .get("payload")
        .and_then(Value::as_str)
        .or_else(|| message.payload.get("reply_id").and_then(Value::as_str));
    let text = message
        .body
        .as_deref()
        .unwrap_or_default()
        .trim()
        .to_lowercase();
    let text = text.trim_end_matches(['.', '!']);
    let answer = if payload == Some(request::CONNECT_YES) || YES.contains(&text) {
        IdentityStatus::Connected
    } else if payload == Some(request::CONNECT_NO) || NO.contains(&text) {
        IdentityStatus::Declined
    } else {
        return Ok(());
    };
    let mut consent = contacts::identity_consent(conn, tenant, IdentityId(ident.id))
        .await?
        .unwrap_or_else(|| json!({}));
    if let Some(o) = consent.as_object_mut() {
        o.insert("answer".into(), json!(answer));
        o.insert("answered_at".into(), json!(Utc::now()));
        o.insert("answer_message_id".into(), json!(message.id));
        o.insert("answer_text".into(), json!(message.body));
        o.insert("answer_payload".into(), json!(payload));
    }
    contacts::set_identity_status(
        conn,
        tenant,
        IdentityId(ident.id),
        answer,
        None,
        Some(&consent),
    )
    .await?;
    Ok(())
}
