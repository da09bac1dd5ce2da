//! The lifecycle of apps on the host: the install pipeline (queue → pull → create →
//! init → installed), start/stop/restart through their units, uninstall, the status
//! read from the truth, and reconciliation at start-up.

mod image_files;

use crate::app::plan::{self, AppPlan};
use crate::app::{AppFolder, slice_name, unit_name};
use crate::catalog::Catalog;
use crate::catalog::compose::VARIABLES;
use crate::config::Config;
use crate::error::AppError;
use crate::images::progress::{Progress, ProgressInfo};
use crate::images::{PulledImage, Puller};
use crate::runtime::containerd::Containerd;
use crate::runtime::oci::names_an_account;
use crate::runtime::systemd::{Systemd, UnitState};
use crate::store::{AppRecord, Phase, StatusReason, Store, UninstallRequest};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, Semaphore};

/// An app's state as the SPEC names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Queuing,
    Pulling,
    Creating,
    Initing,
    Running,
    Stopping,
    Stopped,
    Error,
    Uninstalling,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queuing => "queuing",
            Status::Pulling => "pulling",
            Status::Creating => "creating",
            Status::Initing => "initing",
            Status::Running => "running",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::Error => "error",
            Status::Uninstalling => "uninstalling",
        }
    }

    /// SPEC `status_code`.
    pub fn code(self) -> &'static str {
        match self {
            Status::Queuing => "00",
            Status::Pulling => "10",
            Status::Creating => "11",
            Status::Initing => "12",
            Status::Running => "30",
            Status::Stopping | Status::Stopped | Status::Uninstalling => "40",
            Status::Error => "50",
        }
    }
}

/// What AppStart, AppStop and AppRestart ask of an installed app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Start,
    Stop,
    Restart,
}

/// What AppStatus shows of an app's state.
pub struct Truth {
    pub status: Status,
    pub reason: Option<StatusReason>,
    pub progress: Option<ProgressInfo>,
}

impl Truth {
    fn plain(status: Status) -> Truth {
        Truth {
            status,
            reason: None,
            progress: None,
        }
    }
}

const RUNTIME_ERROR: &str = "Server.Container.Error";

/// The host services an installed app needs, connected on first use (and again after
/// a failure), so the API answers even while containerd or systemd is down.
#[derive(Clone)]
struct Runtime {
    containerd: Containerd,
    systemd: Arc<Systemd>,
    puller: Puller,
}

pub struct Lifecycle {
    store: Arc<Store>,
    catalog: Arc<Catalog>,
    config: Arc<Config>,
    config_path: PathBuf,
    runtime: tokio::sync::Mutex<Option<Runtime>>,
    progress: Mutex<HashMap<String, Arc<Progress>>>,
    /// Installs under way, so an uninstall can stop one.
    installs: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    wake: Notify,
}

impl Lifecycle {
    pub fn new(
        store: Arc<Store>,
        catalog: Arc<Catalog>,
        config: Arc<Config>,
        config_path: PathBuf,
    ) -> Lifecycle {
        Lifecycle {
            store,
            catalog,
            config,
            config_path,
            runtime: tokio::sync::Mutex::new(None),
            progress: Mutex::default(),
            installs: Mutex::default(),
            wake: Notify::new(),
        }
    }

    async fn runtime(&self) -> Result<Runtime, AppError> {
        let mut runtime = self.runtime.lock().await;
        if let Some(connected) = runtime.as_ref() {
            return Ok(connected.clone());
        }
        let containerd = Containerd::connect(
            &self.config.containerd_socket,
            &self.config.containerd_namespace,
        )
        .await
        .map_err(|e| AppError::Container(e.to_string()))?;
        let systemd = Systemd::connect(None, self.config.unit_dir.clone())
            .await
            .map_err(|e| AppError::Container(e.to_string()))?;
        let connected = Runtime {
            puller: Puller::new(containerd.clone(), self.config.registries.clone()),
            containerd,
            systemd: Arc::new(systemd),
        };
        *runtime = Some(connected.clone());
        Ok(connected)
    }

    /// Wakes the install queue: an app was queued.
    pub fn queued(&self) {
        self.wake.notify_one();
    }

    /// Runs the install queue for the daemon's lifetime: up to `max_parallel_installs`
    /// at once, oldest first. Zero pauses it.
    pub async fn run_queue(self: Arc<Self>) {
        let slots = Arc::new(Semaphore::new(self.config.max_parallel_installs));
        loop {
            if self.config.max_parallel_installs > 0 {
                let queued = self.store.with_phase(Phase::Queuing).unwrap_or_else(|err| {
                    tracing::error!(%err, "reading the install queue");
                    Vec::new()
                });
                for app in queued {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    // Taken off the queue before the next look at it.
                    if !self
                        .store
                        .set_phase(&app.app_id, Phase::Pulling, None)
                        .unwrap_or(false)
                    {
                        continue;
                    }
                    let lifecycle = self.clone();
                    let app_id = app.app_id.clone();
                    // The map stays locked until the handle is in: an install that ends
                    // at once removes its entry only after that, and none goes stale.
                    let mut installs = self.installs.lock().unwrap_or_else(|p| p.into_inner());
                    let task = tokio::spawn(async move {
                        lifecycle.install(app).await;
                        drop(slot);
                    });
                    installs.insert(app_id, task.abort_handle());
                }
            }
            self.wake.notified().await;
        }
    }

    /// The install pipeline for one app; a failure leaves it in error with the reason,
    /// and nothing of it on the host but its data.
    async fn install(self: &Arc<Self>, app: AppRecord) {
        let app_id = app.app_id.clone();
        let outcome = self.install_phases(&app).await;
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&app_id);
        self.installs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&app_id);
        match outcome {
            Ok(()) => {
                let _ = self.store.set_phase(&app_id, Phase::Installed, None);
                tracing::info!(app_id, "installed and running");
            }
            Err(detail) => {
                tracing::error!(app_id, %detail, "install failed");
                if let Ok(runtime) = self.runtime().await
                    && let Err(err) = self.teardown(&runtime, &app_id, false).await
                {
                    tracing::error!(app_id, %err, "cleaning up after the failed install");
                }
                let reason = StatusReason {
                    code: RUNTIME_ERROR.into(),
                    detail,
                };
                let _ = self.store.set_phase(&app_id, Phase::Failed, Some(&reason));
            }
        }
        self.wake.notify_one();
    }

    async fn install_phases(&self, app: &AppRecord) -> Result<(), String> {
        let app_id = app.app_id.as_str();
        let runtime = self.runtime().await.map_err(|e| e.detail())?;
        let catalog_app = self
            .catalog
            .get(&app.app_name)
            .ok_or_else(|| format!("the catalog no longer has {}", app.app_name))?;
        let folder = self.app_folder(app_id);
        let variables = |name: &str| -> Option<String> {
            Some(match name {
                "APP_NAME" => app_id.to_string(),
                "APP_VERSION" => app.app_version.clone(),
                "APP_HTTP_PORT" => app.http_port.to_string(),
                "APP_USER" => catalog_app.meta.user_name.clone(),
                "APP_PASSWORD" => app.password.clone(),
                "APP_DATA" => folder.data().display().to_string(),
                _ => return None,
            })
        };
        debug_assert!(VARIABLES.iter().all(|v| variables(v).is_some()));
        let (compose, rendered) =
            crate::catalog::compose::Compose::render(&catalog_app.compose_text, &variables)?;

        // Pulling: every image of the app, with one progress across them.
        let progress = Arc::new(Progress::default());
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(app_id.into(), progress.clone());
        let mut references: Vec<String> =
            compose.services.values().map(|s| s.image.clone()).collect();
        references.sort();
        references.dedup();
        let pulled = runtime
            .puller
            .pull_all(&references, &progress)
            .await
            .map_err(|e| e.to_string())?;
        let images: BTreeMap<String, PulledImage> = references.into_iter().zip(pulled).collect();

        // Creating: the app folder, the containers, the unit.
        self.store
            .set_phase(app_id, Phase::Creating, None)
            .map_err(|e| e.to_string())?;
        // User names resolve in the image's own /etc/passwd and /etc/group.
        let mut accounts = BTreeMap::new();
        for service in compose.services.values() {
            // A missing image is prepare's error to report.
            let Some(image) = images.get(&service.image) else {
                continue;
            };
            let user = service.user.as_deref().unwrap_or(&image.config.user);
            if names_an_account(user) && !accounts.contains_key(&service.image) {
                let read = image_files::read_accounts(
                    &runtime.containerd,
                    &image.chain_id,
                    self.config.run_dir(),
                )
                .await?;
                accounts.insert(service.image.clone(), read);
            }
        }
        let prepared = plan::prepare(app_id, &compose, &images, &accounts, &folder)?;
        // compose.yaml and plan.json hold the app's password: root only. Containers read
        // hosts as whatever user they run as.
        let write = |path: PathBuf, text: &str, mode: u32| {
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::remove_file(&path);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
                .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()))
                .map_err(|e| format!("{}: {e}", path.display()))
        };
        for dir in std::iter::once(folder.data()).chain(prepared.folders.iter().cloned()) {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        for seed in &prepared.seeds {
            image_files::seed_volume(&runtime.containerd, seed, self.config.run_dir()).await?;
        }
        write(folder.compose_file(), &rendered, 0o600)?;
        write(folder.hosts_file(), &prepared.hosts, 0o644)?;
        let plan_text = serde_json::to_string_pretty(&prepared.plan).map_err(|e| e.to_string())?;
        write(folder.plan_file(), &plan_text, 0o600)?;
        let labels = HashMap::from([(
            crate::runtime::containerd::APP_LABEL.to_string(),
            app_id.to_string(),
        )]);
        for container in &prepared.containers {
            // A container left by an interrupted attempt is replaced.
            runtime
                .containerd
                .delete_container(&container.id)
                .await
                .map_err(|e| e.to_string())?;
            runtime
                .containerd
                .create_container(
                    &container.id,
                    &container.image,
                    &container.chain_id,
                    &container.spec,
                    labels.clone(),
                )
                .await
                .map_err(|e| e.to_string())?;
        }
        let unit = unit_name(app_id);
        let unit_text = self.unit_file(app_id, &catalog_app.meta.trademark, &prepared.plan)?;
        runtime
            .systemd
            .install_unit(&unit, &unit_text)
            .await
            .map_err(|e| e.to_string())?;

        // Initing: the unit starts; its start job ends when the supervisor reports the
        // health checks passed (READY=1), or fails with its reason.
        self.store
            .set_phase(app_id, Phase::Initing, None)
            .map_err(|e| e.to_string())?;
        runtime
            .systemd
            .enable(&unit)
            .await
            .map_err(|e| e.to_string())?;
        if let Err(err) = runtime.systemd.start(&unit).await {
            let why = runtime
                .systemd
                .status(&unit)
                .await
                .map(|s| s.status_text)
                .unwrap_or_default();
            return Err(if why.is_empty() {
                err.to_string()
            } else {
                format!("{err}: {why}")
            });
        }
        Ok(())
    }

    fn unit_file(&self, app_id: &str, trademark: &str, plan: &AppPlan) -> Result<String, String> {
        let exe = std::env::current_exe().map_err(|e| format!("locating appunitd: {e}"))?;
        let config = std::path::absolute(&self.config_path).map_err(|e| e.to_string())?;
        // Enough for every health check to use its start period and all its retries.
        let start_ms: u64 = plan
            .services
            .iter()
            .filter_map(|s| s.health.as_ref())
            .map(|h| {
                h.start_period_ms + (h.interval_ms + h.timeout_ms) * (u64::from(h.retries) + 1)
            })
            .sum();
        let stop_ms: u64 = plan.services.iter().map(|s| s.stop_grace_ms + 10_000).sum();
        Ok(format!(
            "# Written by appunitd; changes are overwritten.\n\
             [Unit]\n\
             Description=appunit app {app_id} ({trademark})\n\
             Wants=containerd.service network-online.target\n\
             After=containerd.service network-online.target\n\
             StartLimitIntervalSec=300\n\
             StartLimitBurst=3\n\
             \n\
             [Service]\n\
             Type=notify\n\
             NotifyAccess=main\n\
             ExecStart={exe} --config {config} supervise {app_id}\n\
             Slice={slice}\n\
             Restart=on-failure\n\
             RestartSec=5\n\
             TimeoutStartSec={start}\n\
             TimeoutStopSec={stop}\n\
             \n\
             [Install]\n\
             WantedBy={target}\n",
            target = self.config.unit_target,
            exe = exe.display(),
            config = config.display(),
            slice = slice_name(app_id),
            start = (start_ms / 1000 + 120),
            stop = (stop_ms / 1000 + 10),
        ))
    }

    fn app_folder(&self, app_id: &str) -> AppFolder {
        AppFolder::new(&self.config.state_dir, app_id)
    }

    /// AppStatus's truth: the pipeline's phase while installing, the unit afterwards.
    pub async fn truth(&self, record: &AppRecord) -> Truth {
        match record.phase {
            Phase::Queuing => Truth::plain(Status::Queuing),
            Phase::Pulling => Truth {
                progress: self
                    .progress
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&record.app_id)
                    .map(|p| p.info()),
                ..Truth::plain(Status::Pulling)
            },
            Phase::Creating => Truth::plain(Status::Creating),
            Phase::Initing => Truth::plain(Status::Initing),
            Phase::Uninstalling => Truth::plain(Status::Uninstalling),
            Phase::Failed => Truth {
                reason: record.reason.clone(),
                ..Truth::plain(Status::Error)
            },
            Phase::Installed => self.unit_truth(&record.app_id).await,
        }
    }

    async fn unit_truth(&self, app_id: &str) -> Truth {
        let failed = |detail: String| Truth {
            status: Status::Error,
            reason: Some(StatusReason {
                code: RUNTIME_ERROR.into(),
                detail,
            }),
            progress: None,
        };
        let runtime = match self.runtime().await {
            Ok(runtime) => runtime,
            Err(err) => return failed(err.detail()),
        };
        let unit = unit_name(app_id);
        let status = match runtime.systemd.status(&unit).await {
            Ok(status) => status,
            Err(err) => return failed(err.to_string()),
        };
        match status.state {
            _ if status.auto_restart => failed(status.status_text),
            UnitState::Failed => failed(if status.status_text.is_empty() {
                format!("{unit} failed")
            } else {
                status.status_text
            }),
            UnitState::Activating => Truth::plain(Status::Initing),
            UnitState::Active | UnitState::Reloading => Truth::plain(Status::Running),
            UnitState::Deactivating => Truth::plain(Status::Stopping),
            UnitState::Inactive => Truth::plain(Status::Stopped),
        }
    }

    /// AppStart, AppStop or AppRestart, once the unit reached its state. AppStop is
    /// sticky: the unit is disabled, so it stays down at boot too, until AppStart.
    pub async fn change(&self, app_id: &str, change: Change) -> Result<(), AppError> {
        let runtime = self.runtime().await?;
        let (unit, systemd) = (unit_name(app_id), &runtime.systemd);
        match change {
            Change::Stop => systemd.disable(&unit).await,
            Change::Start | Change::Restart => systemd.enable(&unit).await,
        }
        .map_err(container_error)?;
        match change {
            Change::Start => systemd.start(&unit).await,
            Change::Stop => systemd.stop(&unit).await,
            Change::Restart => systemd.restart(&unit).await,
        }
        .map_err(container_error)
    }

    /// AppUninstall, in any phase: an install under way is stopped first.
    pub async fn uninstall(
        &self,
        record: &AppRecord,
        request: UninstallRequest,
    ) -> Result<(), AppError> {
        let app_id = record.app_id.as_str();
        if let Some(install) = self
            .installs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(app_id)
        {
            install.abort();
        }
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(app_id);
        if record.phase != Phase::Queuing {
            self.store
                .begin_uninstall(app_id, request, record.reason.as_ref())?;
            let runtime = self.runtime().await?;
            self.teardown(&runtime, app_id, request.delete_image)
                .await
                .map_err(AppError::Container)?;
        }
        let folder = self.app_folder(app_id);
        remove_folder(folder.path(), request.delete_data).map_err(AppError::System)?;
        self.store.delete(app_id)?;
        Ok(())
    }

    /// Removes what an app has on the host but its folder: unit, containers with
    /// their tasks and snapshots, network namespace, output FIFOs; its images when
    /// asked and unused by other apps.
    async fn teardown(
        &self,
        runtime: &Runtime,
        app_id: &str,
        delete_image: bool,
    ) -> Result<(), String> {
        // Every step is tried, whatever failed before it: leave as little as possible.
        let mut failures = Vec::new();
        if let Err(err) = runtime.systemd.remove_unit(&unit_name(app_id)).await {
            failures.push(err.to_string());
        }
        let mut images = Vec::new();
        match runtime.containerd.app_containers(Some(app_id)).await {
            Ok(containers) => {
                for container in containers {
                    if let Err(err) = runtime.containerd.delete_container(&container.id).await {
                        failures.push(err.to_string());
                    }
                    images.push(container.image);
                }
            }
            Err(err) => failures.push(err.to_string()),
        }
        if let Err(err) = self.config.network().release(app_id) {
            failures.push(err.to_string());
        }
        let _ = std::fs::remove_dir_all(self.config.app_run_dir(app_id));
        if delete_image {
            images.sort();
            images.dedup();
            for image in images {
                if let Err(err) = runtime.puller.remove_unless_used(&image, app_id).await {
                    failures.push(err.to_string());
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    /// At start-up: installs that were under way when the daemon stopped go back to the
    /// queue, after what they had made is removed (their data stays).
    pub async fn reconcile(&self) {
        // No pull runs yet: any lease of ours belongs to one a crash interrupted.
        if let Ok(runtime) = self.runtime().await {
            match runtime.containerd.release_stale_leases().await {
                Ok(0) => {}
                Ok(released) => {
                    tracing::warn!(released, "released the leases of interrupted pulls")
                }
                Err(err) => tracing::error!(%err, "releasing leases of interrupted pulls"),
            }
        }
        for phase in [Phase::Pulling, Phase::Creating, Phase::Initing] {
            let Ok(apps) = self.store.with_phase(phase) else {
                continue;
            };
            for app in apps {
                tracing::warn!(
                    app_id = app.app_id,
                    phase = phase.as_str(),
                    "install was interrupted: resuming it"
                );
                match self.runtime().await {
                    Ok(runtime) => {
                        if let Err(err) = self.teardown(&runtime, &app.app_id, false).await {
                            tracing::error!(app_id = app.app_id, %err, "rolling back the interrupted install");
                        }
                    }
                    Err(err) => {
                        tracing::error!(app_id = app.app_id, %err, "rolling back the interrupted install")
                    }
                }
                let _ = self.store.set_phase(&app.app_id, Phase::Queuing, None);
            }
        }
        self.report_unknown_units();
        if let Ok(runtime) = self.runtime().await
            && let Ok(containers) = runtime.containerd.app_containers(None).await
        {
            for container in containers {
                if matches!(self.store.get(&container.app_id), Ok(None)) {
                    tracing::warn!(
                        container = container.id,
                        app_id = container.app_id,
                        "a container of an app the store does not know: left as it is"
                    );
                }
            }
        }
        self.wake.notify_one();
    }
}

impl Lifecycle {
    /// App unit files the store has no record of: reported, not deleted (an operator
    /// may have restored a backup, or written them on purpose).
    fn report_unknown_units(&self) {
        let Ok(entries) = std::fs::read_dir(&self.config.unit_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(app_id) = name
                .strip_prefix("appunit-")
                .and_then(|rest| rest.strip_suffix(".service"))
            else {
                continue;
            };
            if matches!(self.store.get(app_id), Ok(None)) {
                tracing::warn!(
                    unit = name,
                    "an app unit the store does not know: left as it is"
                );
            }
        }
    }
}

fn container_error(err: crate::runtime::systemd::SystemdError) -> AppError {
    AppError::Container(err.to_string())
}

/// Removes an app's folder; with `delete_data` false, its `data/` stays for a later
/// install under the same name.
fn remove_folder(folder: &Path, delete_data: bool) -> Result<(), String> {
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", folder.display())),
    };
    if delete_data {
        return std::fs::remove_dir_all(folder).map_err(|e| format!("{}: {e}", folder.display()));
    }
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name() == "data" {
            continue;
        }
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
