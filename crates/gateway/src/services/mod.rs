//! The use cases behind the HTTP handlers, free of HTTP extraction: a handler parses
//! and authorises its request, calls one function here, and serialises the answer.

pub mod channel_actions;
pub mod consent;
pub mod notifications;
pub mod outbound;
pub mod sms_inbound;
pub mod whatsapp_inbound;
