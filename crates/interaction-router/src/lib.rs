//! Agent state, queues, offers and capacity. Built out by the router issue; the crate
//! exists now so the workspace has its final shape and dependencies point one way.
