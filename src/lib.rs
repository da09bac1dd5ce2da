//! appunit: a self-hosted app store's engine. Catalog apps run as systemd units whose
//! containers run on containerd; seven Actions are served as HTTP over a Unix socket.

pub mod actions;
pub mod api;
pub mod app;
pub mod backup;
pub mod catalog;
pub mod client;
pub mod config;
pub mod error;
pub mod host;
pub mod images;
pub mod lifecycle;
pub mod logging;
pub mod malloc;
pub mod messages;
pub mod runtime;
pub mod state;
pub mod store;
pub mod supervisor;
