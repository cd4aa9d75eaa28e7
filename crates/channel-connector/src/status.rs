//! Delivery statuses: applied monotonically (read stays read when a late `delivered`
//! arrives), reconciled by the provider's id or by our own id echoed back, and never an
//! error for a message we don't know (another app on the same number).

use parley_core::state::IdentityStatus;
use parley_core::{TenantId, channel::Channel};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use parley_core::state::MessageStatus;

use crate::providers::{FailureEffect, Provider};

/// How far along a status is (`-1`: not an outbound delivery status).
pub fn rank(status: &str) -> i32 {
    MessageStatus::parse(status)
        .and_then(MessageStatus::rank)
        .map_or(-1, i32::from)
}

/// Move message `id` to `new` if that is forward (see [`MessageStatus::may_move_to`]);
/// set the provider id if it was not known. The message row is written by the store;
/// what a failure means for the address (its provider's [`FailureEffect`]) is applied
/// here. Returns whether anything changed (and then an event was appended).
pub async fn advance(
    conn: &mut PgConnection,
    tenant: TenantId,
    message_id: Uuid,
    new: &str,
    provider_message_id: Option<&str>,
    error: Option<&Value>,
) -> Result<bool, sqlx::Error> {
    let Some(new) = MessageStatus::parse(new) else {
        return Ok(false);
    };
    let moved = conversation_store::messages::advance_status(
        conn,
        tenant,
        parley_core::MessageId(message_id),
        new,
        provider_message_id,
        error,
    )
    .await
    .map_err(|e| match e {
        conversation_store::StoreError::Database(d) => d,
        other => sqlx::Error::Protocol(other.to_string()),
    })?;
    let Some((contact_id, channel)) = moved else {
        return Ok(false);
    };
    if new == MessageStatus::Failed
        && let Some(err) = error
    {
        failure_effects(conn, tenant, message_id, contact_id, channel, err).await?;
    }
    Ok(true)
}

/// What a provider's error says about the contact's address, as its provider reads it
/// ([`Provider::failure_effect`]): the reply window closed, the address unreachable
/// (the identity becomes `invalid`), or the contact opted out (`opted_out`).
async fn failure_effects(
    conn: &mut PgConnection,
    tenant: TenantId,
    message_id: Uuid,
    contact_id: Uuid,
    channel: Channel,
    error: &Value,
) -> Result<(), sqlx::Error> {
    let Some(provider) = Provider::for_channel(channel) else {
        return Ok(());
    };
    let effect = provider.failure_effect(error);
    if effect == FailureEffect::None {
        return Ok(());
    }
    let recipient: Option<String> =
        sqlx::query_scalar("SELECT recipient FROM outbox WHERE tenant_id = $1 AND message_id = $2")
            .bind(tenant.0)
            .bind(message_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(recipient) = recipient else {
        return Ok(());
    };
    let contact = parley_core::ContactId(contact_id);
    let new_status = match effect {
        FailureEffect::None => return Ok(()),
        FailureEffect::CloseReplyWindow => {
            conversation_store::contacts::close_window(conn, tenant, contact, channel, &recipient)
                .await?;
            return Ok(());
        }
        FailureEffect::AddressUnreachable => IdentityStatus::Invalid,
        FailureEffect::OptedOut => IdentityStatus::OptedOut,
    };
    let identity =
        conversation_store::contacts::find_identity(conn, tenant, channel, &recipient).await?;
    if let Some(identity) = identity.filter(|i| i.contact_id == contact_id) {
        conversation_store::contacts::set_identity_status(
            conn,
            tenant,
            parley_core::IdentityId(identity.id),
            new_status,
            Some(error),
            None,
        )
        .await?;
    }
    Ok(())
}

/// Apply a WhatsApp status webhook (see [`apply_status`]).
pub async fn apply(
    conn: &mut PgConnection,
    tenant: TenantId,
    account: Uuid,
    st: &crate::whatsapp::webhook::StatusUpdate,
) -> Result<bool, sqlx::Error> {
    let ours = st
        .callback_data
        .as_deref()
        .and_then(|c| c.parse::<Uuid>().ok());
    apply_status(
        conn,
        tenant,
        account,
        &st.provider_message_id,
        ours,
        &st.status,
        st.error.as_ref(),
    )
    .await
}

/// Apply a provider's delivery status (Parley's spelling: `sent`, `delivered`, `read`,
/// `failed`). Finds the message by the provider's id on this account, or by our id echoed
/// back (a status can beat our own record of the send). Unknown messages are ignored.
pub async fn apply_status(
    conn: &mut PgConnection,
    tenant: TenantId,
    account: Uuid,
    provider_message_id: &str,
    ours: Option<Uuid>,
    status: &str,
    error: Option<&Value>,
) -> Result<bool, sqlx::Error> {
    let id: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM messages
         WHERE tenant_id = $1 AND direction = 'outbound'
           AND ((channel_account_id = $2 AND provider_message_id = $3) OR id = $4)
         LIMIT 1",
    )
    .bind(tenant.0)
    .bind(account)
    .bind(provider_message_id)
    .bind(ours)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(id) = id else {
        tracing::debug!(%status, "status for a message this tenant did not send");
        return Ok(false);
    };
    if rank(status) < 0 && status != "failed" {
        return Ok(false);
    }
    // The message row first, then its outbox row: the order the dispatcher takes them in
    // when it records a send (the other order deadlocked with it).
    let moved = advance(conn, tenant, id, status, Some(provider_message_id), error).await?;
    // The provider has it: whatever our dispatcher last heard, it is not sent again.
    if crate::outbox::settle_by_status(conn, tenant, id).await? {
        tracing::info!(message_id = %id, %status, "a send of unknown outcome was settled by the provider's status");
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `advance` allows, by spelling (an unknown spelling moves nothing).
    fn may_move(current: &str, new: &str) -> bool {
        match (MessageStatus::parse(current), MessageStatus::parse(new)) {
            (Some(c), Some(n)) => c.may_move_to(n),
            _ => false,
        }
    }

    #[test]
    fn statuses_only_move_forward() {
        assert!(may_move("queued", "sent"));
        assert!(may_move("sent", "read"));
        assert!(!may_move("read", "delivered"));
        assert!(!may_move("read", "read"));
        assert!(may_move("read", "played"));
        assert!(may_move("sent", "failed"));
        assert!(!may_move("delivered", "failed"));
        assert!(!may_move("failed", "delivered"));
        assert!(!may_move("sent", "bogus"));
    }

    const ALL: [&str; 7] = [
        "queued",
        "sent",
        "delivered",
        "read",
        "played",
        "failed",
        "bogus",
    ];

    /// Apply `updates` in order from `queued`, as `advance` does; every state visited.
    fn apply(updates: &[&'static str]) -> Vec<&'static str> {
        let mut visited = vec!["queued"];
        for u in updates {
            let current = *visited.last().unwrap_or(&"queued");
            if may_move(current, u) {
                visited.push(u);
            }
        }
        visited
    }

    proptest::proptest! {
        /// Whatever order and duplication webhooks arrive in: the status never moves
        /// back, `failed` is final, and without a failure the end state is the furthest
        /// status received (so the order of arrival does not matter).
        #[test]
        fn statuses_are_monotonic_whatever_the_order(
            picks in proptest::collection::vec(0..ALL.len(), 0..24)
        ) {
            let updates: Vec<&'static str> = picks.iter().map(|i| ALL[*i]).collect();
            let visited = apply(&updates);
            for w in visited.windows(2) {
                proptest::prop_assert!(w[0] != "failed", "left failed for {}", w[1]);
                if w[1] != "failed" {
                    proptest::prop_assert!(rank(w[1]) > rank(w[0]), "{} -> {}", w[0], w[1]);
                }
            }
            if !updates.contains(&"failed") {
                let furthest = updates
                    .iter()
                    .copied()
                    .filter(|u| rank(u) >= 0)
                    .max_by_key(|u| rank(u))
                    .unwrap_or("queued");
                proptest::prop_assert_eq!(*visited.last().unwrap_or(&"queued"), furthest);
                let mut reversed = updates.clone();
                reversed.reverse();
                let backwards = apply(&reversed);
                proptest::prop_assert_eq!(backwards.last(), visited.last());
            }
        }
    }
}
