//! Where appunit's programs log: to journald when systemd connected their output to the
//! journal, to stderr otherwise. RUST_LOG filters by level and target (`info`,
//! `warn,appunit=debug`; default `info`): tracing's `Targets`, not `EnvFilter`, whose
//! span and field filters need a regex engine in every app's supervisor.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

pub fn init() {
    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let registry = tracing_subscriber::registry().with(filter);
    let journald = std::env::var_os("JOURNAL_STREAM").and_then(|_| tracing_journald::layer().ok());
    match journald {
        Some(layer) => registry.with(layer).init(),
        None => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init(),
    }
}
