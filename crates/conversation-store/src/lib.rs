//! The data spine of Parley. It owns the tables every other part reads from: tenants and
//! users, contacts and their channel identities, interactions, messages, attachments and
//! the event log.
//!
//! Repository functions take `&mut PgConnection` so a caller can run several of them, from
//! several crates, in one transaction (`&mut *tx`). Every function that reads or writes
//! tenant data takes the tenant id and filters by it.

pub mod accounts;
pub mod attachments;
pub mod contacts;
mod error;
pub mod events;
pub mod idempotency;
pub mod ingest;
pub mod interactions;
pub mod messages;
pub mod search;

pub use error::StoreError;

/// The migrations of the whole product (one root `migrations/` folder), embedded in the
/// binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");
