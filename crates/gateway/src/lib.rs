//! The gateway: Parley's one binary. It adapts HTTP and WebSocket to the domain crates,
//! authenticates callers, documents itself in OpenAPI and runs the background workers.

pub mod app;
pub mod auth;
pub mod config;
pub mod console;
pub mod error;
pub mod events;
pub mod extract;
pub mod ingest;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod services;
pub mod startup;
pub mod validate;

pub use app::{AppState, build_router, serve};
pub use config::Config;
