//! WhatsApp notification templates and standard responses.
//!
//! A template is kept in the shape WhatsApp uses (`components`: `HEADER`, `BODY`,
//! `FOOTER`, `BUTTONS`), so a template synced from the provider and one written by an
//! admin are the same thing. [`model::parse`] reads components into a [`model::Definition`]
//! (its fields, buttons, header) and, in strict mode, applies WhatsApp's rules, reporting
//! each violation with the component and the rule. [`fill`] resolves fields from agent
//! input, bindings to contact/agent/clock data, and defaults, and renders the text the
//! contact will see; [`store`] keeps templates and standard responses per tenant.

pub mod fill;
pub mod model;
pub mod store;

/// One problem with a template or a request, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Where: `components[1].text`, `fields.first_name`, ...
    pub field: String,
    /// The rule broken.
    pub message: String,
}

impl Problem {
    /// A problem at `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
