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
