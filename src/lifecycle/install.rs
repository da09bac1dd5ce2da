//! The install pipeline of one app: pulling → creating → initing → installed. Each step
//! is a transition of the app's record; a refused transition means the app was
//! uninstalled (or installed anew) meanwhile, and the pipeline stops without a trace.
//! An uninstall stops it through its cancellation token: the pull and the unit's start
//! are dropped where they are (they leave nothing running), the creating steps end at
//! the next step, so no file or container is made behind the uninstall's back.

use super::{InstallError, Lifecycle, unit_file};
use crate::app::plan::{self, Prepared};
use crate::app::{AppFolder, Credentials, redact, unit_name};
use crate::catalog::CatalogApp;
use crate::catalog::compose::{Compose, NetworkMode, VARIABLES};
use crate::error::Code;
use crate::host;
use crate::images::PulledImage;
use crate::images::progress::Progress;
use crate::runtime::oci::names_an_account;
use crate::store::{AppRecord, HostPort, OperationKind, StatusReason, StoreError, Transition};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

impl Lifecycle {
    /// Runs the pipeline; a failure leaves the app in error with the reason, and
    /// nothing of it on the host but its data.
    pub(super) async fn install(
        self: Arc<Self>,
        app: AppRecord,
        progress: Arc<Progress>,
        cancel: CancellationToken,
    ) {
        let app_id = app.app_id.as_str();
        match self.install_phases(&app, &progress, &cancel).await {
            Ok(()) => tracing::info!(app_id, "installed and running"),
            Err(
                err @ (InstallError::Store(StoreError::Refused { .. }) | InstallError::Cancelled),
            ) => {
                tracing::info!(app_id, %err, "install stopped");
            }
            Err(err) => {
                let detail = redact(&err.to_string(), std::slice::from_ref(&app.password));
                tracing::error!(app_id, detail, "install failed");
                if let Err(cleanup) = self.teardown(app_id, false).await {
                    tracing::error!(app_id, %cleanup, "cleaning up after the failed install");
                }
                let reason = StatusReason {
                    code: err.code(),
                    detail,
                };
                if let Err(err) = self.transition(&app, Transition::Fail, Some(reason)).await {
                    tracing::warn!(app_id, %err, "recording the failed install");
                }
            }
        }
        if let Some(task) = tokio::task::try_id() {
            self.registry.install_ended(app_id, task);
        }
        self.wake.notify_one();
    }

    /// The app's catalog entry: the catalog may have dropped it since it was installed.
    pub(super) fn catalog_app(&self, app: &AppRecord) -> Result<&CatalogApp, InstallError> {
        self.catalog
            .get(&app.app_name)
            .ok_or_else(|| InstallError::NotInCatalog(app.app_name.clone()))
    }

    async fn install_phases(
        &self,
        app: &AppRecord,
        progress: &Arc<Progress>,
        cancel: &CancellationToken,
    ) -> Result<(), InstallError> {
        let catalog_app = self.catalog_app(app)?;
        let folder = AppFolder::new(&self.config.state_dir, &app.app_id);
        // A restore puts the backup's data, credentials and images in place first.
        let restoring = app.operation.as_ref().and_then(|o| match o.kind {
            OperationKind::Restore => o.source.clone(),
            _ => None,
        });
        if let Some(bundle) = &restoring {
            self.restore_from(app, bundle, &folder).await?;
        }
        let (compose, rendered) = render(app, catalog_app, &folder)?;
        self.claim_ports(app, &compose).await?;
        let images = cancel
            .run_until_cancelled(self.pull(&compose, progress, restoring.is_some()))
            .await
            .ok_or(InstallError::Cancelled)??;
        self.transition(app, Transition::Pulled, None).await?;
        let mut prepared = self.prepare(app, &compose, &images, &folder).await?;
        prepared.plan.secrets.push(app.password.clone());
        self.create(app, catalog_app, &folder, &rendered, &prepared, cancel)
            .await?;
        self.transition(app, Transition::Created, None).await?;
        cancel
            .run_until_cancelled(self.init(app))
            .await
            .ok_or(InstallError::Cancelled)??;
        self.transition(app, Transition::Started, None).await?;
        Ok(())
    }

    /// Claims every host port the app publishes before anything is pulled: a port
    /// another app or a host program holds ends the install at once, naming the holder.
    async fn claim_ports(&self, app: &AppRecord, compose: &Compose) -> Result<(), InstallError> {
        let mut ports: Vec<HostPort> = Vec::new();
        for (name, service) in &compose.services {
            // A service on the host's network publishes nothing (as with Docker).
            if service.network_mode == NetworkMode::Host {
                continue;
            }
            for spec in &service.ports {
                let Some(port) = spec.host else { continue };
                let port = HostPort {
                    ip: spec.host_ip.clone(),
                    port,
                    protocol: spec.protocol.to_string(),
                };
                if ports.contains(&port) {
                    return Err(InstallError::Plan(format!(
                        "host port {port} is published twice (again by {name})"
                    )));
                }
                ports.push(port);
            }
        }
        let claiming = app.clone();
        let (tcp, udp) = (host::listening_ports("tcp"), host::listening_ports("udp"));
        self.store
            .blocking(move |store| {
                store.claim_ports(&claiming, &ports, |port| match port.protocol.as_str() {
                    "udp" => udp.contains(&port.port),
                    _ => tcp.contains(&port.port),
                })
            })
            .await?;
        Ok(())
    }

    /// Every image of the app, with one progress across them.
    pub(super) async fn pull(
        &self,
        compose: &Compose,
        progress: &Arc<Progress>,
        local_first: bool,
    ) -> Result<BTreeMap<String, PulledImage>, InstallError> {
        let mut references: Vec<String> =
            compose.services.values().map(|s| s.image.clone()).collect();
        references.sort();
        references.dedup();
        let pulled = self
            .backends
            .images
            .pull_all(&references, progress, local_first)
            .await?;
        Ok(references.into_iter().zip(pulled).collect())
    }

    /// The containers and plan, with user names resolved in the image's own
    /// /etc/passwd and /etc/group.
    pub(super) async fn prepare(
        &self,
        app: &AppRecord,
        compose: &Compose,
        images: &BTreeMap<String, PulledImage>,
        folder: &AppFolder,
    ) -> Result<Prepared, InstallError> {
        let mut accounts = BTreeMap::new();
        for service in compose.services.values() {
            // A missing image is prepare's error to report.
            let Some(image) = images.get(&service.image) else {
                continue;
            };
            let user = service.user.as_deref().unwrap_or(&image.config.user);
            if names_an_account(user) && !accounts.contains_key(&service.image) {
                let read = self
                    .backends
                    .containers
                    .read_accounts(&image.chain_id)
                    .await
                    .map_err(InstallError::ImageFiles)?;
                accounts.insert(service.image.clone(), read);
            }
        }
        plan::prepare(
            &app.app_id,
            compose,
            images,
            &accounts,
            folder,
            self.config.app_gateway(),
        )
        .map_err(InstallError::Plan)
    }

    /// The app folder, the containers and the unit. The plan is written before the
    /// first container: while it exists, containers of the app may.
    pub(super) async fn create(
        &self,
        app: &AppRecord,
        catalog_app: &CatalogApp,
        folder: &AppFolder,
        rendered: &str,
        prepared: &Prepared,
        cancel: &CancellationToken,
    ) -> Result<(), InstallError> {
        let go_on = || {
            if cancel.is_cancelled() {
                Err(InstallError::Cancelled)
            } else {
                Ok(())
            }
        };
        let plan_text = serde_json::to_string_pretty(&prepared.plan)
            .map_err(|e| InstallError::Plan(e.to_string()))?;
        let credentials = serde_json::to_string(&Credentials {
            app_name: app.app_name.clone(),
            password: app.password.clone(),
        })
        .map_err(|e| InstallError::Plan(e.to_string()))?;
        let mut files = vec![
            // compose.yaml and plan.json hold the app's password: root only.
            // Containers read hosts as whatever user they run as.
            (folder.compose_file(), rendered.to_string(), 0o600),
            (folder.hosts_file(), prepared.hosts.clone(), 0o644),
            (folder.plan_file(), plan_text, 0o600),
            (folder.credentials_file(), credentials, 0o600),
        ];
        files.extend(
            prepared
                .files
                .iter()
                .map(|(path, text)| (path.clone(), text.clone(), 0o644)),
        );
        let copies = prepared.copies.clone();
        // Root only: what holds the app's secrets and data, and what a container plants
        // in its volumes (a setuid program, a device node), is out of the host's users'
        // reach. Containers get volumes and files by bind mounts, which need no way
        // through these folders. A volume's own folder is 0755 as Docker makes it, so a
        // container's non-root user may read an empty one.
        let folders: Vec<_> = [(folder.path().to_path_buf(), 0o700), (folder.data(), 0o700)]
            .into_iter()
            .chain(prepared.folders.iter().map(|f| (f.clone(), 0o755)))
            .collect();
        tokio::task::spawn_blocking(move || write_app_folder(&folders, &files, &copies))
            .await
            .map_err(|e| InstallError::Plan(e.to_string()))??;
        for seed in &prepared.seeds {
            go_on()?;
            self.backends
                .containers
                .seed_volume(seed)
                .await
                .map_err(InstallError::ImageFiles)?;
        }
        for container in &prepared.containers {
            go_on()?;
            self.backends
                .containers
                .create_container(&app.app_id, container)
                .await?;
        }
        let unit_text = unit_file(
            &self.config,
            &self.config_path,
            &app.app_id,
            &catalog_app.meta.trademark,
            &prepared.plan,
        )?;
        go_on()?;
        self.backends
            .units
            .install_unit(&unit_name(&app.app_id), &unit_text)
            .await?;
        Ok(())
    }

    /// The unit starts; its start job ends when the supervisor reports the health
    /// checks passed (READY=1), or fails with the supervisor's reason.
    pub(super) async fn init(&self, app: &AppRecord) -> Result<(), InstallError> {
        let (unit, units) = (unit_name(&app.app_id), &self.backends.units);
        units.enable(&unit).await?;
        if let Err(error) = units.start(&unit).await {
            let why = units
                .status(&unit)
                .await
                .map(|s| s.status_text)
                .unwrap_or_default();
            return Err(InstallError::Start { error, why });
        }
        Ok(())
    }
}

/// The catalog's compose file with appunit's variables for this app.
pub(super) fn render(
    app: &AppRecord,
    catalog_app: &CatalogApp,
    folder: &AppFolder,
) -> Result<(Compose, String), InstallError> {
    let variables = |name: &str| -> Option<String> {
        Some(match name {
            "APP_NAME" => app.app_id.clone(),
            "APP_VERSION" => app.app_version.clone(),
            "APP_HTTP_PORT" => app.http_port.to_string(),
            "APP_USER" => catalog_app.meta.user_name.clone(),
            "APP_PASSWORD" => app.password.clone(),
            "APP_DATA" => folder.data().display().to_string(),
            _ => return None,
        })
    };
    debug_assert!(VARIABLES.iter().all(|v| variables(v).is_some()));
    catalog_app
        .render(&variables, &folder.data())
        .map_err(InstallError::Compose)
}

/// The app's folders, each made with its mode unless it exists (a kept volume keeps
/// the mode its container gave it), and its files written fresh with their modes. Modes
/// are set, not requested: the daemon's umask (0077) would take from a requested one.
fn write_app_folder(
    folders: &[(std::path::PathBuf, u32)],
    files: &[(std::path::PathBuf, String, u32)],
    copies: &[(std::path::PathBuf, std::path::PathBuf)],
) -> Result<(), InstallError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InstallError::Io { path, source }
    };
    for (dir, mode) in folders {
        let made = !dir.exists();
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        if made || *mode == 0o700 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode))
                .map_err(io(dir))?;
        }
    }
    // Relative binds: the catalog folder's files, copied once (the app may change them).
    for (from, to) in copies {
        if !to.exists() {
            copy_tree(from, to).map_err(io(from))?;
        }
    }
    for (path, text, mode) in files {
        let _ = std::fs::remove_file(path);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(*mode)
            .open(path)
            .and_then(|mut file| {
                file.set_permissions(std::fs::Permissions::from_mode(*mode))?;
                std::io::Write::write_all(&mut file, text.as_bytes())
            })
            .map_err(io(path))?;
    }
    Ok(())
}

/// Copies a file, or a folder with what is in it.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if !from.exists() {
        // As Docker makes a missing bind source: an empty folder.
        std::fs::create_dir_all(to)?;
        return std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755));
    }
    if from.is_dir() {
        std::fs::create_dir_all(to)?;
        // The catalog's mode, not what the daemon's umask leaves: containers read it as
        // whatever user they run as.
        std::fs::set_permissions(to, from.metadata()?.permissions())?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(from, to).map(|_| ())
    }
}

impl InstallError {
    pub fn code(&self) -> Code {
        match self {
            InstallError::Store(StoreError::PortTaken { .. }) => Code::ContainerError,
            InstallError::Store(_) | InstallError::Io { .. } | InstallError::Exe(_) => {
                Code::SystemError
            }
            _ => Code::ContainerError,
        }
    }
}
