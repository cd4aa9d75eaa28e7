//! Parley's shared vocabulary: typed ids, user roles and the authenticated principal.
//!
//! Every crate speaks of tenants and users through these types so that a tenant id can
//! never be passed where a user id is expected, and every domain call carries the
//! caller's tenant.

pub mod channel;
pub mod outbound;
pub mod state;
pub mod storable;

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered (UUID v7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }
    };
}

id_type!(
    /// A contact-center organisation; every row belongs to exactly one.
    TenantId
);
id_type!(
    /// An agent, supervisor or admin.
    UserId
);
id_type!(
    /// A person the contact center talks to.
    ContactId
);
id_type!(
    /// One address of a contact on one channel.
    IdentityId
);
id_type!(
    /// One routed unit of work with one contact on one channel.
    InteractionId
);
id_type!(
    /// One message in a transcript.
    MessageId
);
id_type!(
    /// A stored file (image).
    AttachmentId
);

/// What a user may do. Ordered: each role can do what the ones before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Handles interactions.
    Agent,
    /// Sees and steers agents and queues.
    Supervisor,
    /// Configures the tenant: users, channels, queues.
    Admin,
}

impl Role {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of `agent`, `supervisor`, `admin`.
#[derive(Debug, thiserror::Error)]
#[error("unknown role `{0}`: expected agent, supervisor or admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "agent" => Ok(Role::Agent),
            "supervisor" => Ok(Role::Supervisor),
            "admin" => Ok(Role::Admin),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

/// The authenticated caller of a request: who, in which tenant, with which role.
/// Domain functions take it (or its tenant) so that every query is scoped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    /// The calling user.
    pub user_id: UserId,
    /// The tenant the user belongs to; all data access is limited to it.
    pub tenant_id: TenantId,
    /// What the user may do.
    pub role: Role,
}

impl Principal {
    /// Whether the principal's role is at least `min`.
    pub fn has_role(&self, min: Role) -> bool {
        self.role >= min
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_power() {
        assert!(Role::Admin > Role::Supervisor && Role::Supervisor > Role::Agent);
        let p = Principal {
            user_id: UserId::new(),
            tenant_id: TenantId::new(),
            role: Role::Supervisor,
        };
        assert!(p.has_role(Role::Agent) && p.has_role(Role::Supervisor));
        assert!(!p.has_role(Role::Admin));
    }

    #[test]
    fn role_round_trips_through_its_spelling() {
        for r in [Role::Agent, Role::Supervisor, Role::Admin] {
            assert_eq!(r.as_str().parse::<Role>().ok(), Some(r));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
