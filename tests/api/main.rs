//! Parley's black-box suite: real gateways over real HTTP and real PostgreSQL.
//!
//! Each test starts its own gateway on `127.0.0.1:0` with a fresh database (see the
//! `test-support` crate); `binary` starts the compiled executable itself.

mod access;
mod attachments;
mod auth;
mod binary;
mod channels;
mod consent;
mod console;
mod contacts;
mod deploy;
mod drills;
mod events;
mod inbound;
mod input;
mod isolation;
mod newcomer;
mod openapi;
mod ops;
mod pagination;
mod platform;
mod queues;
mod races;
mod roles;
mod routing;
mod search;
mod sessions;
mod sms;
mod templates;
mod tenancy;
mod transcript;
mod users;
mod whatsapp;
