//! The store's error type: what went wrong, in terms a caller can map to HTTP.

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint was violated; `field` names the input that collided.
    #[error("{field} is already taken")]
    Conflict {
        /// The input field that collided (e.g. `email`).
        field: &'static str,
        /// The constraint's name.
        constraint: String,
    },
    /// A referenced row does not exist (or belongs to another tenant).
    #[error("{field} refers to something that does not exist")]
    MissingReference {
        /// The input field holding the reference.
        field: &'static str,
    },
    /// The address already belongs to a contact of the tenant.
    #[error("the address already belongs to contact {owner}")]
    IdentityTaken {
        /// The contact that owns it.
        owner: uuid::Uuid,
        /// The existing identity.
        identity: uuid::Uuid,
    },
    /// Input the store refuses (e.g. a body over the limit).
    #[error("{field}: {message}")]
    Invalid {
        /// The input field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Something the operation needs does not exist in the tenant.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Any other database failure.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// Map a database error, naming known constraints by the field that caused them.
    pub(crate) fn from_db(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err
            && let Some(constraint) = db.constraint()
        {
            let field = match constraint {
                "users_email_key" => Some("email"),
                "messages_body_length" => {
                    return StoreError::Invalid {
                        field: "body",
                        message: format!(
                            "must be at most {} characters",
                            crate::messages::MAX_STORED_BODY_CHARS
                        ),
                    };
                }
                "message_attachments_attachment_fk" => Some("attachment_ids"),
                "interactions_contact_fk" | "messages_contact_fk" => Some("contact_id"),
                _ => None,
            };
            if let Some(field) = field {
                if db.is_unique_violation() {
                    return StoreError::Conflict {
                        field,
                        constraint: constraint.to_owned(),
                    };
                }
                if db.is_foreign_key_violation() {
                    return StoreError::MissingReference { field };
                }
            }
        }
        StoreError::Database(err)
    }
}

/// For worker loops that speak `sqlx::Error`: a database failure stays itself, anything
/// else becomes a protocol error carrying its message.
impl From<StoreError> for sqlx::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Database(d) => d,
            other => sqlx::Error::Protocol(other.to_string()),
        }
    }
}
