//! The state machines' states, one spelling each: what the database stores, the API
//! shows and the code compares. Parse a stored or given spelling with `parse`; compare
//! enums, not strings.

use serde::{Deserialize, Serialize};

macro_rules! states {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $spelling:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),*
        }

        impl $name {
            /// Every state, in the order of the machine.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The one spelling (database, API, events).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $spelling),*
                }
            }

            /// The state spelt `s`.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($spelling => Some($name::$variant),)*
                    _ => None,
                }
            }

            /// Every spelling, for messages naming what is allowed.
            pub fn spellings() -> String {
                Self::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;

            /// For rows read from the database (`#[sqlx(try_from = "String")]`).
            fn try_from(s: String) -> Result<Self, String> {
                Self::parse(&s).ok_or_else(|| format!("unknown {} `{s}`", stringify!($name)))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

states!(
    /// An interaction (one contact's conversation on one channel, routed to an agent).
    InteractionState {
        /// Waiting for an agent.
        Queued = "queued",
        /// Offered to an agent, not yet accepted.
        Offered = "offered",
        /// An agent is handling it.
        Active = "active",
        /// Ended; wrap-up pending.
        Ended = "ended",
        /// Wrapped up.
        Done = "done",
    }
);

states!(
    /// An offer of an interaction to one agent.
    OfferState {
        /// Waiting for the agent's answer.
        Pending = "pending",
        /// Accepted.
        Accepted = "accepted",
        /// Declined.
        Declined = "declined",
        /// Not answered in time.
        TimedOut = "timed_out",
        /// Taken back (transfer, take-over, reassignment).
        Rescinded = "rescinded",
    }
);

states!(
    /// An agent's availability.
    AgentState {
        /// Takes new interactions.
        Ready = "ready",
        /// Away, with a reason.
        NotReady = "not_ready",
        /// Missed an offer; set by the router.
        NotResponding = "not_responding",
        /// Wrapping up.
        AfterWork = "after_work",
        /// No event stream; set by the server.
        Offline = "offline",
    }
);

states!(
    /// A contact's address on a channel: consent and reachability.
    IdentityStatus {
        /// Nothing known.
        Unverified = "unverified",
        /// Asked to connect (WhatsApp Connect), no answer yet.
        ConnectRequested = "connect_requested",
        /// Reachable and agreed.
        Connected = "connected",
        /// Said no to Connect.
        Declined = "declined",
        /// Not reachable (the provider's reason kept).
        Invalid = "invalid",
        /// Wrote STOP (or the provider said so); nothing is sent.
        OptedOut = "opted_out",
    }
);

states!(
    /// A message's delivery status.
    MessageStatus {
        /// Inbound: stored.
        Received = "received",
        /// Outbound: in the outbox.
        Queued = "queued",
        /// The provider took it.
        Sent = "sent",
        /// On the contact's device.
        Delivered = "delivered",
        /// Read.
        Read = "read",
        /// Played (voice).
        Played = "played",
        /// Will not be delivered; the provider's reason kept.
        Failed = "failed",
    }
);

states!(
    /// An outbox row.
    OutboxState {
        /// To be sent (or retried).
        Pending = "pending",
        /// Sent, or settled by the provider's status.
        Done = "done",
        /// Refused for good.
        Failed = "failed",
    }
);

impl MessageStatus {
    /// How far along an outbound status is (`None` for `failed` and `received`).
    pub fn rank(self) -> Option<u8> {
        match self {
            Self::Queued => Some(0),
            Self::Sent => Some(1),
            Self::Delivered => Some(2),
            Self::Read => Some(3),
            Self::Played => Some(4),
            Self::Failed | Self::Received => None,
        }
    }

    /// Whether a message at `self` may move to `new`: forward only, and a failure only
    /// before delivery.
    pub fn may_move_to(self, new: Self) -> bool {
        match new {
            Self::Failed => matches!(self, Self::Queued | Self::Sent),
            _ => {
                self != Self::Failed
                    && match (self.rank(), new.rank()) {
                        (Some(a), Some(b)) => b > a,
                        (None, Some(_)) => self != Self::Received,
                        _ => false,
                    }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_has_one_spelling() {
        for s in InteractionState::ALL {
            assert_eq!(InteractionState::parse(s.as_str()), Some(*s));
            assert_eq!(
                serde_json::to_value(s).ok(),
                Some(serde_json::json!(s.as_str()))
            );
        }
        for s in MessageStatus::ALL {
            assert_eq!(MessageStatus::parse(s.as_str()), Some(*s));
        }
        assert_eq!(
            IdentityStatus::parse("opted_out"),
            Some(IdentityStatus::OptedOut)
        );
        assert_eq!(AgentState::parse("x"), None);
        assert_eq!(
            InteractionState::spellings(),
            "queued, offered, active, ended, done"
        );
    }

    #[test]
    fn statuses_only_move_forward_and_fail_before_delivery() {
        use MessageStatus::*;
        assert!(Queued.may_move_to(Sent));
        assert!(Sent.may_move_to(Read));
        assert!(!Delivered.may_move_to(Sent));
        assert!(!Read.may_move_to(Delivered));
        assert!(Sent.may_move_to(Failed));
        assert!(!Delivered.may_move_to(Failed));
        assert!(!Failed.may_move_to(Delivered));
        assert!(!Received.may_move_to(Sent));
    }
}
