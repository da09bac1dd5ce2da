//! The lifecycle of apps on the host: the install queue and pipeline (queue → pull →
//! create → init → installed), start/stop/restart through their units, uninstall, the
//! status read from the truth, and reconciliation at start-up. Every change of an app's
//! phase is a transition of the store's state machine (`store::phase`); the host is
//! reached only through the `backends` traits.

mod backends;
mod backup;
mod image_files;
mod install;
pub mod registry;
mod unit_file;
mod upgrade;

#[cfg(test)]
mod fakes;
#[cfg(test)]
mod tests;

pub use backends::{AppNetwork, Backends, ContainerRuntime, ImageSource, UnitManager};
pub use registry::Operation;

use crate::app::{AppFolder, Credentials, unit_name};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::error::AppError;
use crate::images::PullError;
use crate::images::progress::ProgressInfo;
use crate::runtime::containerd::ContainerdError;
use crate::runtime::systemd::SystemdError;
use crate::state::Model;
use crate::store::{
    AppRecord, OperationKind, Phase, StatusReason, Store, StoreError, Transition, UninstallRequest,
};
use futures_util::StreamExt;
use registry::{Busy, Registry};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{Notify, Semaphore};
use unit_file::unit_file;

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
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    pub status: Status,
    pub reason: Option<StatusReason>,
    pub progress: Option<ProgressInfo>,
}

impl Truth {
    pub fn plain(status: Status) -> Truth {
        Truth {
            status,
            reason: None,
            progress: None,
        }
    }
}

/// Why an install failed, with its cause kept.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("the catalog no longer has {0}")]
    NotInCatalog(String),
    #[error("{0}")]
    Compose(String),
    #[error("{0}")]
    Plan(String),
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    #[error(transparent)]
    Systemd(#[from] SystemdError),
    #[error("{0}")]
    ImageFiles(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("locating appunitd: {0}")]
    Exe(std::io::Error),
    #[error("the install was stopped")]
    Cancelled,
    /// The unit did not start: systemd's word, and the supervisor's reason.
    #[error("{error}{}", if why.is_empty() { String::new() } else { format!(": {why}") })]
    Start { error: SystemdError, why: String },
    /// The unit started, then failed within the upgrade's health gate.
    #[error("the app stopped within the health gate: {0}")]
    Exited(String),
}

pub struct Lifecycle {
    store: Arc<Store>,
    catalog: Arc<Catalog>,
    config: Arc<Config>,
    config_path: PathBuf,
    backends: Backends,
    registry: Registry,
    wake: Notify,
    /// Every app's status, told of each change as it happens.
    model: Arc<Model>,
}

impl Lifecycle {
    pub fn new(
        store: Arc<Store>,
        catalog: Arc<Catalog>,
        config: Arc<Config>,
        config_path: PathBuf,
        backends: Backends,
    ) -> Lifecycle {
        let records = store.list(None).unwrap_or_else(|err| {
            tracing::error!(%err, "reading the apps");
            Vec::new()
        });
        let model = Arc::new(Model::new(backends.units.clone(), records));
        Lifecycle {
            store,
            catalog,
            config,
            config_path,
            backends,
            registry: Registry::default(),
            wake: Notify::new(),
            model,
        }
    }

    /// Every app's status, as AppList, AppStatus and /Events show it.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Tells the model the app's record changed. The record is read here, at the
    /// change: read later, a phase that lasted less than the reader's delay (queuing,
    /// at times) would never be seen.
    fn changed(&self, app_id: &str) {
        if self.record_changed(app_id) {
            tokio::spawn(self.model.clone().read_unit(app_id.to_string(), false));
        }
    }

    /// At start-up: the apps with an operation of `kind` that a crash cut short.
    async fn cut_short(&self, kind: OperationKind) -> Vec<AppRecord> {
        self.store
            .blocking(move |store| store.with_operation(kind))
            .await
            .unwrap_or_else(|err| {
                tracing::error!(%err, "reading the operations under way");
                Vec::new()
            })
    }

    /// The model takes the app's record as stored now; whether its unit is to be read.
    fn record_changed(&self, app_id: &str) -> bool {
        match self.store.get(app_id) {
            // Not the registry's progress: this runs under its lock at times (an
            // install's start). The progress comes with the next look at it.
            Ok(record) => self.model.set_record(app_id, record),
            Err(err) => {
                tracing::warn!(app_id, %err, "reading the changed app");
                false
            }
        }
    }

    /// Relays systemd's reports of app units changing state to the model, for the
    /// daemon's lifetime: a unit stopped by hand is a change like any other. Pulls'
    /// progress goes to it too, four times a second as SPEC allows no more.
    pub async fn watch_units(self: Arc<Self>) {
        tokio::spawn(self.clone().track_progress());
        self.model.read_units();
        loop {
            match self.backends.units.unit_changes().await {
                Ok(mut units) => {
                    while let Some(unit) = units.next().await {
                        if let Some(app_id) = app_of_unit(&unit) {
                            let read = self.model.clone().read_unit(app_id.to_string(), true);
                            tokio::spawn(read);
                        }
                    }
                    tracing::warn!("systemd's signals ended; subscribing again");
                }
                Err(err) => tracing::debug!(%err, "subscribing to systemd's signals"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    async fn track_progress(self: Arc<Self>) {
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        loop {
            tick.tick().await;
            for app_id in self.model.pulling() {
                let progress = self.registry.progress(&app_id).map(|p| p.info());
                self.model.set_progress(&app_id, progress);
            }
        }
    }

    /// Marks `operation` as under way on the app until the guard drops; a second one
    /// meanwhile is `App.Busy`, naming the first.
    pub fn begin(&self, app_id: &str, operation: Operation) -> Result<Busy<'_>, AppError> {
        self.registry.begin(app_id, operation).map_err(|other| {
            AppError::Busy(format!(
                "{} of {app_id} is in progress",
                other.action_name()
            ))
        })
    }

    /// Runs an operation on an installed app in the background under the app's busy
    /// guard. Answers once `begin` says whether it is under way; `run` then goes on with
    /// what `begin` gave.
    async fn in_background<T, Begin, Run>(
        self: &Arc<Self>,
        app_id: &str,
        operation: Operation,
        begin: impl FnOnce(Arc<Self>) -> Begin + Send + 'static,
        run: impl FnOnce(Arc<Self>, T) -> Run + Send + 'static,
    ) -> Result<(), AppError>
    where
        T: Send + 'static,
        Begin: Future<Output = Result<T, AppError>> + Send,
        Run: Future<Output = ()> + Send,
    {
        let (told, answer) = tokio::sync::oneshot::channel();
        let (lifecycle, app_id) = (self.clone(), app_id.to_string());
        tokio::spawn(async move {
            let _busy = match lifecycle.begin(&app_id, operation) {
                Ok(busy) => busy,
                Err(err) => {
                    let _ = told.send(Err(err));
                    return;
                }
            };
            let began = match begin(lifecycle.clone()).await {
                Ok(began) => began,
                Err(err) => {
                    let _ = told.send(Err(err));
                    return;
                }
            };
            let _ = told.send(Ok(()));
            lifecycle.changed(&app_id);
            run(lifecycle.clone(), began).await;
        });
        answer
            .await
            .map_err(|_| AppError::System(format!("{} ended at once", operation.action_name())))?
    }

    /// Wakes the install queue: an app was queued.
    pub fn queued(&self, app_id: &str) {
        self.changed(app_id);
        self.wake.notify_one();
    }

    /// Applies a transition on a blocking thread.
    async fn transition(
        &self,
        app: &AppRecord,
        transition: Transition,
        reason: Option<StatusReason>,
    ) -> Result<Phase, StoreError> {
        self.record(app, move |store, app| {
            store.transition(app, transition, reason.as_ref())
        })
        .await
    }

    /// Writes the app's record with `write` on a blocking thread, and the model takes it.
    async fn record(
        &self,
        app: &AppRecord,
        write: impl FnOnce(&Store, &AppRecord) -> Result<Phase, StoreError> + Send + 'static,
    ) -> Result<Phase, StoreError> {
        let moved = app.clone();
        let from = self
            .store
            .blocking(move |store| write(store, &moved))
            .await?;
        // An app that just became installed is served with its unit read.
        if self.record_changed(&app.app_id) {
            self.model
                .clone()
                .read_unit(app.app_id.clone(), false)
                .await;
        }
        Ok(from)
    }

    /// Runs the install queue for the daemon's lifetime: up to `max_parallel_installs`
    /// at once, oldest first. Zero pauses it.
    pub async fn run_queue(self: Arc<Self>) {
        let slots = Arc::new(Semaphore::new(self.config.max_parallel_installs));
        loop {
            if self.config.max_parallel_installs > 0 {
                let queued = self
                    .store
                    .blocking(|store| store.with_phase(Phase::Queuing))
                    .await
                    .unwrap_or_else(|err| {
                        tracing::error!(%err, "reading the install queue");
                        Vec::new()
                    });
                // An app queued while the store was read is taken at its own wake-up.
                for app in queued
                    .into_iter()
                    .filter(|app| self.model.shows_queued(app))
                {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    self.start_install(app, slot);
                }
            }
            self.wake.notified().await;
        }
    }

    /// Takes the app off the queue and starts its install, unless an operation on it
    /// (an uninstall) is under way or it left the queue meanwhile.
    fn start_install(self: &Arc<Self>, app: AppRecord, slot: tokio::sync::OwnedSemaphorePermit) {
        let app_id = app.app_id.clone();
        self.registry.start_install(&app_id, |progress, cancel| {
            // Under the registry's lock: an uninstall cannot begin between the two.
            if let Err(err) = self.store.transition(&app, Transition::Dequeue, None) {
                tracing::debug!(%err, "not installing");
                return None;
            }
            self.changed(&app.app_id);
            let lifecycle = self.clone();
            Some(tokio::spawn(async move {
                lifecycle.install(app, progress, cancel).await;
                drop(slot);
            }))
        });
    }

    /// AppStart, AppStop or AppRestart, once the unit reached its state. AppStop is
    /// sticky: the unit is disabled, so it stays down at boot too, until AppStart.
    pub async fn change(&self, app_id: &str, change: Change) -> Result<(), AppError> {
        let (unit, units) = (unit_name(app_id), &self.backends.units);
        match change {
            Change::Stop => units.disable(&unit).await,
            Change::Start | Change::Restart => units.enable(&unit).await,
        }
        .map_err(container_error)?;
        let done = match change {
            Change::Start => units.start(&unit).await,
            Change::Stop => units.stop(&unit).await,
            Change::Restart => units.restart(&unit).await,
        };
        // systemd reports the unit's states as they come; the end is read here, so
        // that the answer's next request sees it.
        self.model
            .clone()
            .read_unit(app_id.to_string(), false)
            .await;
        done.map_err(container_error)
    }

    /// AppUninstall, in any phase, under the caller's `Operation::Uninstall` guard: an
    /// install under way is stopped first.
    pub async fn uninstall(
        &self,
        record: &AppRecord,
        request: UninstallRequest,
    ) -> Result<(), AppError> {
        let app_id = record.app_id.as_str();
        if let Some(install) = self.registry.take_install(app_id) {
            install.cancel.cancel();
            // Nothing of it runs on while the app is torn down.
            let _ = install.task.await;
        }
        let uninstalling = record.clone();
        let from = self
            .store
            .blocking(move |store| store.begin_uninstall(&uninstalling, request))
            .await
            .map_err(|err| match err {
                StoreError::Refused { .. } => AppError::AppIdNotExist(app_id.into()),
                err => err.into(),
            })?;
        self.changed(app_id);
        // A queued app has nothing on the host yet.
        if from != Phase::Queuing {
            self.teardown(app_id, request.delete_image)
                .await
                .map_err(AppError::Container)?;
        }
        let folder = AppFolder::new(&self.config.state_dir, app_id);
        tokio::task::spawn_blocking(move || remove_folder(&folder, request.delete_data))
            .await
            .map_err(|e| AppError::System(e.to_string()))?
            .map_err(AppError::System)?;
        let removed = record.clone();
        self.store
            .blocking(move |store| store.remove(&removed))
            .await?;
        self.changed(app_id);
        Ok(())
    }

    /// The credentials kept with the data of an uninstalled app of that name.
    pub async fn kept_credentials(&self, app_id: &str) -> Result<Option<Credentials>, AppError> {
        let folder = AppFolder::new(&self.config.state_dir, app_id);
        tokio::task::spawn_blocking(move || folder.kept_credentials())
            .await
            .map_err(|e| AppError::System(e.to_string()))?
            .map_err(|e| AppError::System(format!("reading the kept credentials of {app_id}: {e}")))
    }

    /// AppUninstall with delete_data=true of a name that only has kept data: deletes it.
    pub async fn delete_kept(&self, app_id: &str) -> Result<(), AppError> {
        let folder = AppFolder::new(&self.config.state_dir, app_id);
        tokio::task::spawn_blocking(move || remove_folder(&folder, true))
            .await
            .map_err(|e| AppError::System(e.to_string()))?
            .map_err(AppError::System)
    }

    /// Removes what an app has on the host but its folder: unit, containers with
    /// their tasks and snapshots, network namespace, output FIFOs; its images when
    /// asked and unused by other apps. Every step is tried, whatever failed before it:
    /// leave as little as possible.
    async fn teardown(&self, app_id: &str, delete_image: bool) -> Result<(), String> {
        let mut failures = Vec::new();
        if let Err(err) = self.backends.units.remove_unit(&unit_name(app_id)).await {
            failures.push(err.to_string());
        }
        let images = match self.remove_containers(app_id).await {
            Ok(images) => images,
            Err(err) => {
                failures.push(err);
                Vec::new()
            }
        };
        let (network, run_dir) = (
            self.backends.network.clone(),
            self.config.app_run_dir(app_id),
        );
        let id = app_id.to_string();
        let released = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(run_dir);
            network.release(&id).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(err) = released {
            failures.push(err);
        }
        if delete_image {
            for image in images {
                if let Err(err) = self
                    .backends
                    .images
                    .remove_unless_used(&image, app_id)
                    .await
                {
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

    /// Deletes the app's containers, then its plan (their marker); the images they ran.
    /// With no plan, no container of the app was ever made: containerd need not answer.
    async fn remove_containers(&self, app_id: &str) -> Result<Vec<String>, String> {
        let plan = AppFolder::new(&self.config.state_dir, app_id).plan_file();
        let containers = match self.backends.containers.app_containers(Some(app_id)).await {
            Ok(containers) => containers,
            Err(_) if !plan.exists() => return Ok(Vec::new()),
            Err(err) => return Err(err.to_string()),
        };
        let mut images = Vec::new();
        for container in containers {
            self.backends
                .containers
                .delete_container(&container.id)
                .await
                .map_err(|e| e.to_string())?;
            images.push(container.image);
        }
        match std::fs::remove_file(&plan) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("{}: {err}", plan.display()));
            }
            _ => {}
        }
        images.sort();
        images.dedup();
        Ok(images)
    }

    /// At start-up: installs that were under way when the daemon stopped go back to the
    /// queue, after what they had made is removed (their data stays); upgrades roll
    /// back; uninstalls a crash cut short are finished, deleting what they were asked
    /// to; backups cut short are cleaned up after; then the queue runs.
    pub async fn reconcile(self: Arc<Self>) {
        // No pull runs yet: any lease of ours belongs to one a crash interrupted.
        match self.backends.containers.release_stale_leases().await {
            Ok(0) => {}
            Ok(released) => tracing::warn!(released, "released the leases of interrupted pulls"),
            Err(err) => tracing::error!(%err, "releasing leases of interrupted pulls"),
        }
        for phase in [Phase::Pulling, Phase::Creating, Phase::Initing] {
            let apps = self
                .store
                .blocking(move |store| store.with_phase(phase))
                .await
                .unwrap_or_default();
            // An upgrade's phases are the install's: those roll back instead.
            for app in apps.into_iter().filter(|app| {
                app.operation
                    .as_ref()
                    .is_none_or(|o| o.kind != OperationKind::Upgrade)
            }) {
                let app_id = app.app_id.as_str();
                tracing::warn!(
                    app_id,
                    phase = phase.as_str(),
                    "install was interrupted: resuming it"
                );
                if let Err(err) = self.teardown(app_id, false).await {
                    tracing::error!(app_id, %err, "rolling back the interrupted install");
                }
                if let Err(err) = self.transition(&app, Transition::Requeue, None).await {
                    tracing::error!(app_id, %err, "requeuing the interrupted install");
                }
            }
        }
        self.resume_upgrades().await;
        self.report_strangers().await;
        tokio::join!(
            self.finish_interrupted_uninstalls(),
            self.finish_interrupted_backups(),
            self.clone().run_queue()
        );
    }

    async fn finish_interrupted_uninstalls(&self) {
        let pending = self
            .store
            .blocking(|store| store.pending_uninstalls())
            .await
            .unwrap_or_default();
        for (record, request) in pending {
            let app_id = record.app_id.as_str();
            let Ok(_busy) = self.begin(app_id, Operation::Uninstall) else {
                continue; // an AppUninstall got there first
            };
            tracing::warn!(app_id, "uninstall was interrupted: finishing it");
            if let Err(err) = self.uninstall(&record, request).await {
                tracing::error!(app_id, %err, "finishing the interrupted uninstall");
            }
        }
    }

    /// App units and containers the store has no record of: reported, not deleted (an
    /// operator may have restored a backup, or made them on purpose).
    async fn report_strangers(&self) {
        let known: std::collections::BTreeSet<String> = self
            .store
            .blocking(|store| store.list(None))
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|record| record.app_id)
            .collect();
        for entry in std::fs::read_dir(&self.config.unit_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().to_string();
            let app_id = name
                .strip_prefix("appunit-")
                .and_then(|rest| rest.strip_suffix(".service"));
            if app_id.is_some_and(|id| !known.contains(id)) {
                tracing::warn!(
                    unit = name,
                    "an app unit the store does not know: left as it is"
                );
            }
        }
        if let Ok(containers) = self.backends.containers.app_containers(None).await {
            for container in containers.iter().filter(|c| !known.contains(&c.app_id)) {
                tracing::warn!(
                    container = container.id,
                    app_id = container.app_id,
                    "a container of an app the store does not know: left as it is"
                );
            }
        }
    }
}

/// How often a pull's progress is looked at: SPEC's most.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// `blog` of `appunit-blog.service`.
fn app_of_unit(unit: &str) -> Option<&str> {
    unit.strip_prefix("appunit-")?.strip_suffix(".service")
}

fn container_error(err: SystemdError) -> AppError {
    AppError::Container(err.to_string())
}

/// Removes an app's folder; with `delete_data` false, its `data/` and credentials stay
/// for a later install of the same app under the same name.
fn remove_folder(app_folder: &AppFolder, delete_data: bool) -> Result<(), String> {
    let folder = app_folder.path();
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", folder.display())),
    };
    if delete_data {
        return std::fs::remove_dir_all(folder).map_err(|e| format!("{}: {e}", folder.display()));
    }
    let kept = [app_folder.data(), app_folder.credentials_file()];
    for entry in entries.flatten() {
        let path = entry.path();
        if kept.contains(&path) {
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
