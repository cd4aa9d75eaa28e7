//! Providers in and out: the WhatsApp Business Platform Cloud API and Twilio SMS behind
//! one seam ([`providers`]) — webhook verification and parsing, status reconciliation,
//! and outbound delivery through a transactional outbox that stores what to send
//! provider-neutral. Owns the `channel_accounts`, `outbox` and `webhook_dead_letters`
//! tables.
//!
//! Nothing here calls a provider inside a database transaction: the HTTP handlers only
//! write rows; the [`outbox`] dispatcher makes provider calls between transactions.

pub mod accounts;
pub mod dead_letters;
pub mod media;
pub mod outbox;
pub mod providers;
pub mod signature;
pub mod status;
pub mod twilio_sms;
pub mod whatsapp;
pub mod worker;

/// A connector failure.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A store or database failure.
    #[error(transparent)]
    Store(#[from] conversation_store::StoreError),
    /// A database failure.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Install the process-wide TLS crypto provider (ring) that HTTP clients use. Call before
/// building any `reqwest::Client`; idempotent.
pub fn install_tls() {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        // Several TLS users share the process; whichever installs first wins.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An HTTP client for provider APIs: TLS through rustls with the platform's roots,
/// bounded timeouts.
pub fn http_client(timeout: std::time::Duration) -> reqwest::Client {
    install_tls();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(std::time::Duration::from_secs(5))
        .user_agent(concat!("parley/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}
