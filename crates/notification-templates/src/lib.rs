//! WhatsApp notification templates and standard responses. Built out by the templates
//! issue.
