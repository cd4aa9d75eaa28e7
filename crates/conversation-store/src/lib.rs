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

/// The `FROM` item of a statement over a batch passed as one array parameter per column
/// (`arrays`: `"$1::uuid[]"`, …): rows `x(columns…, ord)`, `ord` counting from 1.
///
/// Several rows come from `unnest(…) WITH ORDINALITY`. One row comes from a one-row
/// `SELECT` of each array's first element instead: planned with its parameters' values,
/// `unnest` of a one-element array is estimated at one row, but without them (the plan a
/// prepared statement could keep) at ten, so PostgreSQL found every such plan dearer than
/// planning anew and re-planned the statement on every call (0.7 ms for the message
/// insert, each time one message is stored alone). A one-row `SELECT` is one row either
/// way, so the statement is planned once per connection and its kept plan looks rows up
/// by key like the planned one.
pub(crate) fn batch_rows(arrays: &[&str], columns: &str, len: usize) -> String {
    if len == 1 {
        let firsts: Vec<String> = arrays.iter().map(|a| format!("({a})[1]")).collect();
        format!(
            "(SELECT {}, 1::bigint) AS x({columns}, ord)",
            firsts.join(", ")
        )
    } else {
        format!(
            "unnest({}) WITH ORDINALITY AS x({columns}, ord)",
            arrays.join(", ")
        )
    }
}

/// The migrations of the whole product (one root `migrations/` folder), embedded in the
/// binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Whether the database answers (`SELECT 1`), for readiness checks.
pub async fn ping(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(conn).await.map(|_| ())
}

/// Make the caller's transaction one read-only snapshot (for exports that read several
/// tables and must see them at one moment). Call first in the transaction.
pub async fn snapshot_read_only(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(conn)
        .await
        .map(|_| ())
}
