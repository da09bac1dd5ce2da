//! appunitd: the appunit daemon.

use appunit::actions::Actions;
use appunit::catalog::Catalog;
use appunit::config::{self, Config};
use appunit::images::Puller;
use appunit::images::progress::Progress;
use appunit::lifecycle::{Backends, Lifecycle};
use appunit::runtime::containerd::Containerd;
use appunit::store::Store;
use clap::{Parser, Subcommand};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tokio::net::UnixListener;

#[derive(Parser)]
#[command(
    version,
    about = "appunit daemon: serves the app Actions on a Unix socket"
)]
struct Cli {
    /// Configuration file (every key optional).
    #[arg(long, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Load catalog folders and report every invalid app, naming the file and the key.
    CheckCatalog {
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// Run an installed app's containers, as appunit-supervisor does: the main process
    /// of units written by versions before that binary.
    #[command(hide = true)]
    Supervise { app_id: String },
    /// Unpublish every app's ports and remove its network namespace (the package's
    /// removal runs it once the apps are stopped; an app's next start makes them again).
    ReleaseNetworks,
    /// Pull images into containerd as an install does (mirrors, progress, unpack).
    Pull {
        #[arg(required = true)]
        images: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    appunit::logging::init();
    let outcome = match cli.command {
        Some(Command::CheckCatalog { dirs }) => check_catalog(&dirs),
        Some(Command::Pull { images }) => pull(&cli.config, &images),
        Some(Command::Supervise { app_id }) => appunit::supervisor::main(&cli.config, &app_id),
        Some(Command::ReleaseNetworks) => release_networks(&cli.config),
        None => run_daemon(&cli.config),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("appunitd: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The same check as `appunit catalog check` (SPEC "Catalog import").
fn check_catalog(dirs: &[PathBuf]) -> Result<(), String> {
    if appunit::catalog::check(dirs).print() {
        Ok(())
    } else {
        Err("the catalog has invalid apps".into())
    }
}

fn load_config(path: &Path) -> Result<Config, String> {
    Config::load(path).map_err(|e| e.to_string())
}

fn release_networks(config_path: &Path) -> Result<(), String> {
    let config = load_config(config_path)?;
    let store = Store::open(&config.state_dir.join("appunit.db")).map_err(|e| e.to_string())?;
    let apps = store.list(None).map_err(|e| e.to_string())?;
    let network = config.network();
    let failures: Vec<String> = apps
        .iter()
        .filter_map(|app| network.release(&app.app_id).err())
        .map(|e| e.to_string())
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

fn pull(config_path: &Path, images: &[String]) -> Result<(), String> {
    let config = load_config(config_path)?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("starting tokio: {e}"))?;
    runtime.block_on(async {
        let containerd =
            Containerd::connect(&config.containerd_socket, &config.containerd_namespace)
                .await
                .map_err(|e| e.to_string())?;
        let puller = Puller::new(containerd, config.registries.clone());
        let progress = Arc::new(Progress::default());
        let started = std::time::Instant::now();
        let report = {
            let progress = progress.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    let info = progress.info();
                    eprintln!(
                        "{} / {} bytes ({}%)",
                        info.done_bytes, info.total_bytes, info.percent
                    );
                }
            })
        };
        let pulled = puller.pull_all(images, &progress).await;
        report.abort();
        for image in pulled.map_err(|e| e.to_string())? {
            println!("{}@{}", image.name, image.digest);
        }
        eprintln!(
            "{} layer bytes transferred in {:.2}s",
            progress.transferred_bytes(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    })
}

fn run_daemon(config_path: &Path) -> Result<(), String> {
    let config = load_config(config_path)?;
    // Root only: the database, and every app's secrets and data below apps/. Set at every
    // start, for state trees made before (0755).
    for dir in [config.state_dir.clone(), config.state_dir.join("apps")] {
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let store = Store::open(&config.state_dir.join("appunit.db")).map_err(|e| e.to_string())?;
    let (catalog, errors) = Catalog::load(&config.catalog_dirs);
    for error in &errors {
        tracing::error!(%error, "catalog app rejected");
    }
    if catalog.is_empty() {
        tracing::warn!(dirs = ?config.catalog_dirs, "the catalog is empty: nothing can be installed");
    }
    tracing::info!(apps = catalog.len(), "catalog loaded");

    raise_file_limit();
    // Per-thread arenas (up to 8 per core) each keep the pages freed in them: the
    // workers and the blocking pool share two instead.
    appunit::malloc::limit_arenas(2);
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("starting tokio: {e}"))?;
    runtime.block_on(async {
        let listener = listen(&config.socket)?;
        let (store, catalog, config) = (Arc::new(store), Arc::new(catalog), Arc::new(config));
        let store_probe = store.clone();
        let lifecycle = Arc::new(Lifecycle::new(
            store.clone(),
            catalog.clone(),
            config.clone(),
            config_path.to_path_buf(),
            Backends::real(&config),
        ));
        let actions = Arc::new(Actions::new(store, catalog, config, lifecycle.clone()));
        // Interrupted installs go back to the queue before the queue runs; interrupted
        // uninstalls are finished.
        tokio::spawn(lifecycle.clone().reconcile());
        tokio::spawn(lifecycle.clone().watch_units());
        tokio::spawn(appunit::malloc::trim_when_quiet(
            lifecycle.model().subscribe(),
        ));
        // Harmless when not started by systemd (no NOTIFY_SOCKET).
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        if let Some(timeout) = sd_notify::watchdog_enabled() {
            tokio::spawn(feed_watchdog(timeout, store_probe));
        }
        tracing::info!("serving");
        appunit::api::serve(listener, actions, shutdown_signal()).await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        tracing::info!("stopped");
        Ok(())
    })
}

/// Pings systemd's watchdog (WatchdogSec=) at half its timeout, but only while the async
/// runtime runs and the store answers: a daemon wedged on either is restarted by systemd.
async fn feed_watchdog(timeout: std::time::Duration, store: Arc<Store>) {
    let mut ticks = tokio::time::interval(timeout / 2);
    loop {
        ticks.tick().await;
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.get("")).await {
            Ok(Ok(_)) => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            Ok(Err(error)) => tracing::error!(%error, "store unreadable: watchdog not fed"),
            Err(error) => tracing::error!(%error, "store probe failed: watchdog not fed"),
        }
    }
}

/// Lifts the soft limit of open files to the hard one (systemd's default soft limit is
/// 1024, kept low for programs using select(2); tokio does not): the API's connections
/// (up to `api`'s cap) and the apps' containerd streams must not make accept() fail.
fn raise_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(%error, soft, "cannot raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read the open-file limit"),
    }
}

/// The socket systemd passed (appunitd.socket), else a fresh one at `path`, mode 0660,
/// group `appunit` when that group exists.
fn listen(path: &Path) -> Result<UnixListener, String> {
    let mut passed = listenfd::ListenFd::from_env();
    if let Ok(Some(listener)) = passed.take_unix_listener(0) {
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("passed socket: {e}"))?;
        return UnixListener::from_std(listener).map_err(|e| format!("passed socket: {e}"));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!("another daemon is serving {}", path.display()));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("removing stale {}: {e}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).map_err(|e| format!("binding {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    if let Ok(Some(group)) = nix::unistd::Group::from_name("appunit") {
        nix::unistd::chown(path, None, Some(group.gid))
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    Ok(listener)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot watch SIGTERM/SIGINT; stop the daemon with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: finishing open requests"),
        _ = interrupt.recv() => tracing::info!("SIGINT: finishing open requests"),
    }
}
