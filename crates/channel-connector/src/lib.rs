//! Providers in and out: webhook parsing, the outbound outbox and the provider
//! simulators. Built out by the WhatsApp channel issue.
