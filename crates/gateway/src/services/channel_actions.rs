//! The agent desktop's WhatsApp channel actions on a contact's address: Connect (ask for
//! opt-in with a template), Validate (is the number reachable now, and why), and
//! starting an outbound interaction. No provider call happens inside an open
//! transaction: evidence is read, the provider asked, and the verdict written apart.

use channel_connector::{
    accounts,
    providers::{FailureEffect, Provider},
    whatsapp::request,
};
use chrono::{DateTime, Duration, Utc};
use conversation_store::{
    contacts::{self, Identity},
    interactions::{self, Interaction},
    messages::Message,
};
use parley_core::outbound::{Content, TemplateButton, TemplateContent};
use parley_core::state::{IdentityStatus, MessageStatus};
use parley_core::{ContactId, IdentityId, InteractionId, Principal, TenantId, channel::Channel};
use serde_json::{Value, json};

use crate::{
    app::AppState,
    error::ApiError,
    routes::outbound::{Queued, queue},
    services::consent::check_consent,
};

/// The contact's WhatsApp identity `identity`.
async fn whatsapp_identity(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    contact: ContactId,
    identity: IdentityId,
) -> Result<Identity, ApiError> {
    let c = contacts::get_contact(conn, tenant, contact)
        .await?
        .ok_or_else(|| ApiError::not_found("contact"))?;
    let ident = c
        .identities
        .into_iter()
        .find(|i| i.id == identity.0)
        .ok_or_else(|| ApiError::not_found("identity"))?;
    if ident.channel != Channel::Whatsapp.as_str() {
        return Err(ApiError::invalid_field(
            "identity_id",
            "is not a WhatsApp address",
        ));
    }
    Ok(ident)
}

/// Connect: queue the account's opt-in template with "Yes" / "No" quick replies
/// (allowed outside the 24-hour window) and set the identity `connect_requested`, in one
/// transaction. The contact's answer (see `consent::apply_connect_answer`) settles it.
pub async fn connect(
    state: &AppState,
    principal: Principal,
    contact: ContactId,
    identity: IdentityId,
) -> Result<(Identity, Message), ApiError> {
    let tenant = principal.tenant_id;
    let mut tx = state.db.begin().await?;
    // Like every send: the contact first (see `contacts::lock_for_write`).
    contacts::lock_for_write(&mut tx, tenant, contact).await?;
    let ident = whatsapp_identity(&mut tx, tenant, contact, identity).await?;
    // A contact who said no (or STOP) is not asked again until they write.
    if matches!(
        ident.status,
        IdentityStatus::Declined | IdentityStatus::OptedOut
    ) {
        check_consent(ident.status, false, true)?;
    }
    let account = accounts::for_contact(&mut tx, tenant, contact.0)
        .await?
        .ok_or_else(|| {
            ApiError::invalid_field("channel", "the tenant has no WhatsApp channel account")
        })?;
    let content = Content::Template(TemplateContent {
        name: account.optin_template_name.clone(),
        language: account.optin_template_language.clone(),
        header: None,
        body: vec![],
        buttons: [request::CONNECT_YES, request::CONNECT_NO]
            .into_iter()
            .enumerate()
            .map(|(index, payload)| TemplateButton::QuickReply {
                index,
                payload: payload.to_owned(),
            })
            .collect(),
    });
    let message = queue(
        &mut tx,
        principal,
        contact,
        &account,
        &ident.address,
        Queued {
            kind: "template",
            body: Some(format!("Connect request ({})", account.optin_template_name)),
            payload: json!({ "template": account.optin_template_name, "purpose": "connect" }),
            content,
            attachment_ids: vec![],
            reply_to: None,
            reply_ctx: None,
        },
    )
    .await?;
    let consent = json!({ "requested_at": Utc::now(), "requested_by": principal.user_id, "request_message_id": message.id });
    let ident = contacts::set_identity_status(
        &mut tx,
        tenant,
        IdentityId(ident.id),
        IdentityStatus::ConnectRequested,
        None,
        Some(&consent),
    )
    .await?
    .ok_or_else(|| ApiError::not_found("identity"))?;
    tx.commit().await?;
    Ok((ident, message))
}

/// Validate's verdict.
#[derive(Debug)]
pub struct Verdict {
    /// The identity with its new status.
    pub identity: Identity,
    /// `Connected`, `Invalid` or `Unverified`.
    pub status: IdentityStatus,
    /// Why, in words.
    pub reason: String,
    /// The evidence.
    pub evidence: Value,
    /// What to do next, when there is something to do.
    pub advice: Option<String>,
}

/// The evidence Validate weighs, read from the store (and the provider's contacts
/// check, when it has one and nothing else tells).
#[derive(Debug, Default)]
struct Evidence {
    recent_inbound: Option<DateTime<Utc>>,
    recent_delivery: Option<(MessageStatus, DateTime<Utc>)>,
    undeliverable: Option<(Option<Value>, DateTime<Utc>)>,
    contacts_check: Option<bool>,
    days: i32,
}

/// The verdict from the evidence, strongest first: the contact wrote, a message was
/// delivered, the provider's check, the last send undeliverable, nothing.
fn judge(e: &Evidence) -> (IdentityStatus, String, Value, Option<String>, Option<Value>) {
    let other_channel =
        || Some("check the number with the contact, or use another channel".to_owned());
    if let Some(at) = e.recent_inbound {
        return (
            IdentityStatus::Connected,
            format!("the contact wrote from this number at {at}"),
            json!({"last_inbound_at": at}),
            None,
            None,
        );
    }
    if let Some((status, at)) = e.recent_delivery {
        return (
            IdentityStatus::Connected,
            format!("a message to this number was {status} at {at}"),
            json!({"last_send_status": status, "sent_at": at}),
            None,
            None,
        );
    }
    match e.contacts_check {
        Some(true) => {
            return (
                IdentityStatus::Connected,
                "the provider's contacts check says this number is on WhatsApp".to_owned(),
                json!({"contacts_check": "valid"}),
                None,
                None,
            );
        }
        Some(false) => {
            return (
                IdentityStatus::Invalid,
                "the provider's contacts check says this number is not on WhatsApp".to_owned(),
                json!({"contacts_check": "invalid"}),
                other_channel(),
                Some(json!({"code": "contacts_check", "title": "not a WhatsApp user"})),
            );
        }
        None => {}
    }
    if let Some((error, at)) = &e.undeliverable {
        return (
            IdentityStatus::Invalid,
            "the last message to this number was undeliverable (131026): it is probably not on WhatsApp".to_owned(),
            json!({"last_send_error": error, "sent_at": at}),
            other_channel(),
            error.clone(),
        );
    }
    (
        IdentityStatus::Unverified,
        format!(
            "no message from or delivered to this number in the last {} days",
            e.days
        ),
        json!({}),
        Some(
            "send the Connect template; a delivered or answered template proves the number"
                .to_owned(),
        ),
        None,
    )
}

/// Validate: is this number reachable on WhatsApp now? The Cloud API has no number
/// check, so this judges from evidence within the account's evidence period (see
/// [`judge`]); a provider contacts check is asked only when nothing else tells. The
/// contact's own answer to Connect is never overridden except by proof the number is
/// invalid.
pub async fn validate(
    state: &AppState,
    tenant: TenantId,
    contact: ContactId,
    identity: IdentityId,
) -> Result<Verdict, ApiError> {
    let mut tx = state.db.begin().await?;
    let ident = whatsapp_identity(&mut tx, tenant, contact, identity).await?;
    let account = accounts::for_contact(&mut tx, tenant, contact.0).await?;
    let days = account.as_ref().map_or(30, |a| a.evidence_days);
    let check = match account
        .as_ref()
        .and_then(|a| a.contacts_check_url.clone().map(|u| (a.id, u)))
    {
        Some((id, url)) => accounts::secrets(&mut tx, tenant, id)
            .await?
            .map(|s| (url, s)),
        None => None,
    };
    let last_send =
        channel_connector::outbox::last_send_to(&mut tx, tenant, contact.0, &ident.address).await?;
    // The evidence is read; the provider is asked (if at all) with no transaction open.
    tx.commit().await?;
    let since = Utc::now() - Duration::days(i64::from(days));
    let mut evidence = Evidence {
        recent_inbound: ident.last_inbound_at.filter(|t| *t >= since),
        recent_delivery: last_send
            .as_ref()
            .filter(|s| {
                matches!(
                    s.status,
                    MessageStatus::Delivered | MessageStatus::Read | MessageStatus::Played
                ) && s.created_at >= since
            })
            .map(|s| (s.status, s.created_at)),
        undeliverable: last_send
            .as_ref()
            .filter(|s| {
                s.status == MessageStatus::Failed
                    && s.status_error.as_ref().is_some_and(|e| {
                        Provider::WhatsappCloud.failure_effect(e)
                            == FailureEffect::AddressUnreachable
                    })
            })
            .map(|s| (s.status_error.clone(), s.created_at)),
        contacts_check: None,
        days,
    };
    if let Some((url, secrets)) = &check
        && evidence.recent_inbound.is_none()
        && evidence.recent_delivery.is_none()
        && !parley_core::channel::is_bsuid(&ident.address)
    {
        evidence.contacts_check = channel_connector::whatsapp::client::contacts_check(
            &state.provider_http,
            url,
            secrets,
            &ident.address,
        )
        .await;
    }
    let (status, reason, evidence, advice, last_error) = judge(&evidence);
    // Read again: the contact may have answered while the provider was asked.
    let mut tx = state.db.begin().await?;
    let ident = whatsapp_identity(&mut tx, tenant, contact, identity).await?;
    let keep = matches!(
        ident.status,
        IdentityStatus::Declined | IdentityStatus::ConnectRequested
    ) && status != IdentityStatus::Invalid;
    let ident = if keep || ident.status == status {
        ident
    } else {
        contacts::set_identity_status(
            &mut tx,
            tenant,
            IdentityId(ident.id),
            status,
            last_error.as_ref(),
            None,
        )
        .await?
        .ok_or_else(|| ApiError::not_found("identity"))?
    };
    tx.commit().await?;
    Ok(Verdict {
        identity: ident,
        status,
        reason,
        evidence,
        advice,
    })
}

/// Start a WhatsApp interaction with the contact, assigned to the caller and active. An
/// open one waiting (queued, offered, ended) is taken over; another agent's active one
/// is refused. Whether it was created.
pub async fn create_interaction(
    state: &AppState,
    principal: Principal,
    contact: ContactId,
    channel: Channel,
) -> Result<(Interaction, bool), ApiError> {
    if channel != Channel::Whatsapp {
        return Err(ApiError::invalid_field(
            "channel",
            "only whatsapp interactions can be started today",
        ));
    }
    let tenant = principal.tenant_id;
    let mut tx = state.db.begin().await?;
    let found = contacts::get_contact(&mut tx, tenant, contact)
        .await?
        .ok_or_else(|| ApiError::not_found("contact"))?;
    let ident = found
        .identities
        .iter()
        .filter(|i| {
            i.channel == Channel::Whatsapp.as_str()
                && !matches!(i.status, IdentityStatus::Invalid | IdentityStatus::Declined)
        })
        .max_by_key(|i| i.last_inbound_at)
        .ok_or_else(|| {
            ApiError::invalid_field("channel", "the contact has no usable WhatsApp address")
        })?;
    let account = accounts::for_contact(&mut tx, tenant, contact.0).await?;
    let (interaction, created) = interactions::open_or_create(
        &mut tx,
        tenant,
        contact,
        Channel::Whatsapp,
        Some(IdentityId(ident.id)),
        account.map(|a| a.id),
    )
    .await?;
    let interaction = if created {
        // Announced as an inbound one is (supervisors' queue views), then accepted.
        conversation_store::events::append(
            &mut tx,
            tenant,
            conversation_store::events::Audience::Supervisors,
            "interaction.created",
            &json!({ "interaction": interaction }),
        )
        .await?;
        interaction_router::make_active(
            &mut tx,
            tenant,
            InteractionId(interaction.id),
            principal.user_id,
        )
        .await?
    } else {
        // Open already (say the contact answered a Connect request and it is waiting to
        // be routed): the caller takes it, unless another agent is handling it.
        interaction_router::take_over(
            &mut tx,
            tenant,
            principal.user_id,
            InteractionId(interaction.id),
        )
        .await?
    };
    tx.commit().await?;
    Ok((interaction, created))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strongest_evidence_decides() {
        let now = Utc::now();
        let unreachable = Some((Some(json!({"code": 131026})), now));
        // Nothing: unverified, with advice.
        let v = judge(&Evidence {
            days: 30,
            ..Evidence::default()
        });
        assert_eq!(v.0, IdentityStatus::Unverified);
        assert!(v.1.contains("30 days"));
        assert!(v.3.is_some());
        // An undeliverable last send: invalid, its error kept.
        let v = judge(&Evidence {
            undeliverable: unreachable.clone(),
            ..Evidence::default()
        });
        assert_eq!(v.0, IdentityStatus::Invalid);
        assert_eq!(v.4, Some(json!({"code": 131026})));
        // The provider's check outweighs an old failure; the contact writing outweighs all.
        let v = judge(&Evidence {
            undeliverable: unreachable.clone(),
            contacts_check: Some(true),
            ..Evidence::default()
        });
        assert_eq!(v.0, IdentityStatus::Connected);
        let v = judge(&Evidence {
            undeliverable: unreachable,
            contacts_check: Some(false),
            recent_delivery: Some((MessageStatus::Read, now)),
            ..Evidence::default()
        });
        assert_eq!(
            (v.0, v.2["last_send_status"].clone()),
            (IdentityStatus::Connected, json!("read"))
        );
        let v = judge(&Evidence {
            recent_inbound: Some(now),
            contacts_check: Some(false),
            ..Evidence::default()
        });
        assert_eq!(v.0, IdentityStatus::Connected);
        assert!(v.2.get("last_inbound_at").is_some());
        assert_eq!(v.4, None);
    }
}
