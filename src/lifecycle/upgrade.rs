//! AppUpgrade on the install's phases: the new images pull (`pulling`) while the old
//! version serves; then the app stops, its data and record are saved as a backup (the
//! rollback point), the old containers and unit make way for the new ones (`creating`),
//! and the unit starts (`initing`) behind the health gate, which then watches that no
//! container exits for `SETTLE`. Any failure, or a crash (at the next start), rolls back
//! to the old version: its images (still here; a name both versions use is held under
//! a second name while the pull may move it), containers, unit and data, in the state
//! the app was in; nothing of the new version stays.

use super::install::render;
use super::{InstallError, Lifecycle, Operation};
use crate::app::{AppFolder, redact, unit_name};
use crate::backup::{self, Contents};
use crate::catalog::compose::Compose;
use crate::error::AppError;
use crate::images::progress::Progress;
use crate::runtime::systemd::UnitState;
use crate::store::{
    AppRecord, OperationInfo, OperationKind, Phase, StatusReason, StoreError, Transition,
};
use crate::supervisor::RUNNING;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long the started app must keep running, no container exiting, to pass the gate.
const SETTLE: Duration = Duration::from_secs(5);

/// What a rollback needs that the record does not hold, in the app's folder. Written
/// before the phase moves and again before each destructive step, so a rollback after
/// a crash finds it as it was.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RollbackPoint {
    from_version: String,
    to_version: String,
    /// Whether the old version ran: the app is left as it was found.
    was_running: bool,
    /// The backup (in backup_dir) of the old version's data and record, once written
    /// whole; until then the data was not touched.
    backup: Option<String>,
    /// When this daemon stopped the old version (a crash loses it: downtime unknown).
    #[serde(skip)]
    stopped_at: Option<Instant>,
    /// How long the app served nothing, once a version serves again.
    #[serde(skip)]
    downtime_ms: Option<u64>,
}

impl RollbackPoint {
    /// The app serves again now: its downtime is since the old version stopped, none
    /// when it was not running.
    fn serving_again(&mut self) {
        self.downtime_ms = if self.was_running {
            self.stopped_at
                .map(|at| at.elapsed().as_millis().try_into().unwrap_or(u64::MAX))
        } else {
            Some(0)
        };
    }
}

fn point_file(folder: &AppFolder) -> PathBuf {
    folder.path().join("upgrade.json")
}

/// Writes the point through a renamed temporary file: a crash leaves the old or the new.
fn save_point(folder: &AppFolder, point: &RollbackPoint) -> Result<(), InstallError> {
    let path = point_file(folder);
    let partial = path.with_extension("json.partial");
    let text = serde_json::to_vec(point).map_err(|e| InstallError::Plan(e.to_string()))?;
    let io = |source| InstallError::Io {
        path: path.clone(),
        source,
    };
    std::fs::write(&partial, text).map_err(io)?;
    std::fs::File::open(&partial)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&partial, &path).map_err(io)
}

fn read_point(folder: &AppFolder) -> Option<RollbackPoint> {
    let text = std::fs::read(point_file(folder)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Every image reference of a compose file.
fn references(compose: &Compose) -> BTreeSet<String> {
    compose.services.values().map(|s| s.image.clone()).collect()
}

impl Lifecycle {
    /// AppUpgrade: answers once the upgrade is under way (or busy) and runs it in the
    /// background under the app's busy guard.
    pub async fn start_upgrade(
        self: &Arc<Self>,
        record: AppRecord,
        to_version: String,
    ) -> Result<(), AppError> {
        let app_id = record.app_id.clone();
        let begin = move |lifecycle: Arc<Lifecycle>| async move {
            let progress = Arc::new(Progress::default());
            lifecycle
                .registry
                .show_progress(&record.app_id, progress.clone());
            let record = lifecycle.begin_upgrade(record, &to_version).await?;
            Ok((record, progress))
        };
        let run = |lifecycle: Arc<Lifecycle>, (record, progress): (AppRecord, Arc<Progress>)| async move {
            lifecycle.upgrade(&record, &progress).await
        };
        self.in_background(&app_id, Operation::Upgrade, begin, run)
            .await
    }

    /// Records the rollback point, then the operation and the phase, in that order: an
    /// app in an upgrade's phase always has its point.
    async fn begin_upgrade(
        &self,
        record: AppRecord,
        to_version: &str,
    ) -> Result<AppRecord, AppError> {
        let unit = unit_name(&record.app_id);
        let was_running = self
            .backends
            .units
            .status(&unit)
            .await
            .map_err(|e| AppError::Container(e.to_string()))?
            .state
            == UnitState::Active;
        let folder = AppFolder::new(&self.config.state_dir, &record.app_id);
        let point = RollbackPoint {
            from_version: record.app_version.clone(),
            to_version: to_version.to_string(),
            was_running,
            backup: None,
            stopped_at: None,
            downtime_ms: None,
        };
        save_point(&folder, &point).map_err(|e| AppError::System(e.to_string()))?;
        let info = OperationInfo {
            kind: OperationKind::Upgrade,
            from_version: Some(record.app_version.clone()),
            to_version: Some(to_version.to_string()),
            source: None,
        };
        let began = self
            .store
            .blocking(move |store| store.begin_upgrade(&record, &info))
            .await;
        began.map_err(|err| {
            let _ = std::fs::remove_file(point_file(&folder));
            match err {
                StoreError::Refused { .. } => AppError::Busy(err.to_string()),
                err => err.into(),
            }
        })
    }

    /// Runs the upgrade to its end: the new version installed, or the old one back.
    async fn upgrade(&self, app: &AppRecord, progress: &Arc<Progress>) {
        let app_id = app.app_id.as_str();
        let mut point = self.point_of(app);
        match self.upgrade_phases(app, &mut point, progress).await {
            Ok(()) => {
                tracing::info!(app_id, to = point.to_version, "upgraded");
                self.after_upgrade(app, &point).await;
            }
            Err(err) => {
                let detail = format!(
                    "the upgrade to {} was rolled back: {}",
                    point.to_version,
                    redact(&err.to_string(), std::slice::from_ref(&app.password))
                );
                tracing::error!(app_id, detail, "upgrade failed");
                let reason = StatusReason {
                    code: err.code(),
                    detail,
                };
                self.roll_back(app, &mut point, reason).await;
            }
        }
    }

    async fn upgrade_phases(
        &self,
        app: &AppRecord,
        point: &mut RollbackPoint,
        progress: &Arc<Progress>,
    ) -> Result<(), InstallError> {
        let catalog_app = self.catalog_app(app)?;
        let folder = AppFolder::new(&self.config.state_dir, &app.app_id);
        let target = AppRecord {
            app_version: point.to_version.clone(),
            ..app.clone()
        };
        let (compose, rendered) = render(&target, catalog_app, &folder)?;
        // Names both versions use (the same version, re-resolved) may move with the
        // pull: what they point at now is held for a rollback.
        let old = self.references_of(app, &point.from_version);
        for image in old.intersection(&references(&compose)) {
            self.backends.images.hold(image, &app.app_id).await?;
        }
        let images = self.pull(&compose, progress, false).await?;
        self.transition(app, Transition::Pulled, None).await?;
        let unit = unit_name(&app.app_id);
        if point.was_running {
            self.backends.units.stop(&unit).await?;
            point.stopped_at = Some(Instant::now());
        }
        point.backup = Some(self.save_rollback_backup(app, &folder).await?);
        save_point(&folder, point)?;
        self.teardown(&app.app_id, false)
            .await
            .map_err(InstallError::ImageFiles)?;
        let mut prepared = self.prepare(&target, &compose, &images, &folder).await?;
        prepared.plan.secrets.push(app.password.clone());
        let go_on = CancellationToken::new();
        self.create(&target, catalog_app, &folder, &rendered, &prepared, &go_on)
            .await?;
        self.transition(app, Transition::Created, None).await?;
        self.init(&target).await?;
        point.serving_again();
        self.settle(&unit).await
    }

    /// Ends the upgrade with `transition` (`Started` or `RollBack`) and its downtime.
    async fn end_upgrade(
        &self,
        app: &AppRecord,
        transition: Transition,
        reason: Option<StatusReason>,
        downtime_ms: Option<u64>,
    ) -> Result<Phase, StoreError> {
        self.record(app, move |store, app| {
            store.end_upgrade(app, transition, reason.as_ref(), downtime_ms)
        })
        .await
    }

    /// The health gate's second half: the unit stays active, nothing restarting, for
    /// `SETTLE` (a container that exits makes the supervisor fail the unit).
    async fn settle(&self, unit: &str) -> Result<(), InstallError> {
        let deadline = tokio::time::Instant::now() + SETTLE;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let status = self.backends.units.status(unit).await?;
            // The supervisor's status text names a failure while it still stops the
            // other services (the unit is active until it has).
            let failing = !status.status_text.is_empty() && status.status_text != RUNNING;
            if status.state != UnitState::Active || status.auto_restart || failing {
                return Err(InstallError::Exited(if status.status_text.is_empty() {
                    format!("{unit} is {:?}", status.state)
                } else {
                    status.status_text
                }));
            }
        }
        Ok(())
    }

    /// The old version's data and record as an image-less backup in backup_dir; its
    /// file name.
    async fn save_rollback_backup(
        &self,
        app: &AppRecord,
        folder: &AppFolder,
    ) -> Result<String, InstallError> {
        let dir = self.config.backup_dir();
        let name = backup::bundle_name(&app.app_id, std::time::SystemTime::now());
        let manifest = self
            .manifest(app, folder, false)
            .map_err(InstallError::Plan)?;
        let (path, data) = (dir.join(&name), folder.data());
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|source| InstallError::Io {
                    path: dir.clone(),
                    source,
                })?;
            let contents = Contents {
                data: &data,
                images: None,
            };
            backup::write(&path, &manifest, &contents)
                .map_err(|source| InstallError::Io { path, source })
        })
        .await
        .map_err(|e| InstallError::Plan(e.to_string()))??;
        Ok(name)
    }

    /// The upgrade passed: the app is left as it was found (stopped when it was), the
    /// version is the new one, and the old images no container uses go. The backup of
    /// the old version stays, as a backup like any other.
    async fn after_upgrade(&self, app: &AppRecord, point: &RollbackPoint) {
        let app_id = app.app_id.as_str();
        let unit = unit_name(app_id);
        if !point.was_running {
            let units = &self.backends.units;
            if let Err(err) = units.disable(&unit).await {
                tracing::warn!(app_id, %err, "leaving the upgraded app stopped");
            }
            if let Err(err) = units.stop(&unit).await {
                tracing::warn!(app_id, %err, "leaving the upgraded app stopped");
            }
        }
        let ended = self.end_upgrade(app, Transition::Started, None, point.downtime_ms);
        if let Err(err) = ended.await {
            tracing::error!(app_id, %err, "recording the upgrade's end");
        }
        let folder = AppFolder::new(&self.config.state_dir, app_id);
        let old = self.references_of(app, &point.from_version);
        let new = self.references_of(app, &point.to_version);
        self.remove_images(app_id, old.difference(&new)).await;
        self.release_holds(app_id, old.intersection(&new), false)
            .await;
        let _ = std::fs::remove_file(point_file(&folder));
    }

    async fn release_holds<'a>(
        &self,
        app_id: &str,
        images: impl Iterator<Item = &'a String>,
        restore: bool,
    ) {
        for image in images {
            if let Err(err) = self
                .backends
                .images
                .release_hold(image, app_id, restore)
                .await
            {
                tracing::warn!(app_id, image, %err, "releasing the image held for a rollback");
            }
        }
    }

    /// The image references of `version` of the app, as its catalog entry renders them.
    fn references_of(&self, app: &AppRecord, version: &str) -> BTreeSet<String> {
        let Some(catalog_app) = self.catalog.get(&app.app_name) else {
            return BTreeSet::new();
        };
        let folder = AppFolder::new(&self.config.state_dir, &app.app_id);
        let record = AppRecord {
            app_version: version.to_string(),
            ..app.clone()
        };
        render(&record, catalog_app, &folder)
            .map(|(compose, _)| references(&compose))
            .unwrap_or_default()
    }

    async fn remove_images<'a>(&self, app_id: &str, images: impl Iterator<Item = &'a String>) {
        for image in images {
            match self.backends.images.remove_unless_used(image, app_id).await {
                Ok(removed) => tracing::debug!(app_id, image, removed, "removing an image"),
                Err(err) => tracing::warn!(app_id, image, %err, "removing an image"),
            }
        }
    }

    /// Puts the old version back as it was found and records the rollback. In
    /// `pulling` nothing of the old version was touched: only the new images go.
    async fn roll_back(&self, app: &AppRecord, point: &mut RollbackPoint, reason: StatusReason) {
        let app_id = app.app_id.as_str();
        let phase = self
            .store
            .blocking({
                let id = app_id.to_string();
                move |store| store.get(&id)
            })
            .await
            .ok()
            .flatten()
            .map(|r| r.phase);
        // Names a re-resolved version moved point at the old images again first.
        let old = self.references_of(app, &point.from_version);
        let new = self.references_of(app, &point.to_version);
        self.release_holds(app_id, old.intersection(&new), true)
            .await;
        // In `pulling` nothing of the old version was touched: it served throughout.
        let restored = match phase {
            Some(Phase::Pulling) => {
                point.downtime_ms = Some(0);
                Ok(())
            }
            _ => self.restore_old_version(app, point).await.map(|()| {
                point.serving_again();
            }),
        };
        self.remove_images(app_id, new.difference(&old)).await;
        let folder = AppFolder::new(&self.config.state_dir, app_id);
        let recorded = match restored {
            Ok(()) => {
                // The data is live again; the rollback point is no backup a user asked for.
                if let Some(name) = &point.backup {
                    let _ = backup::delete(&self.config.backup_dir().join(name));
                }
                self.end_upgrade(app, Transition::RollBack, Some(reason), point.downtime_ms)
                    .await
            }
            // The rollback point may hold the only good copy of the data: it stays, and
            // the app is failed, naming it, rather than "rolled back" to what is not there.
            Err(err) => {
                tracing::error!(app_id, %err, "restoring the old version");
                let kept = point.backup.as_deref().map_or(String::new(), |name| {
                    format!("; the data before the upgrade is in the backup {name}")
                });
                let err = redact(&err.to_string(), std::slice::from_ref(&app.password));
                let detail = format!(
                    "{}; restoring {} failed: {err}{kept}",
                    reason.detail, point.from_version
                );
                let reason = StatusReason {
                    code: reason.code,
                    detail,
                };
                self.transition(app, Transition::Fail, Some(reason)).await
            }
        };
        if let Err(err) = recorded {
            tracing::error!(app_id, %err, "recording the rollback");
        }
        let _ = std::fs::remove_file(point_file(&folder));
    }

    /// Whatever of either version is on the host goes; the data comes back from the
    /// rollback point's backup (when the data was touched at all); the old version's
    /// containers and unit are made again from its images, still here, and started
    /// when it ran.
    async fn restore_old_version(
        &self,
        app: &AppRecord,
        point: &RollbackPoint,
    ) -> Result<(), InstallError> {
        let app_id = app.app_id.as_str();
        let unit = unit_name(app_id);
        let _ = self.backends.units.stop(&unit).await;
        self.teardown(app_id, false)
            .await
            .map_err(InstallError::ImageFiles)?;
        let folder = AppFolder::new(&self.config.state_dir, app_id);
        if let Some(name) = &point.backup {
            let (bundle, into, data) = (
                self.config.backup_dir().join(name),
                folder.path().to_path_buf(),
                folder.data(),
            );
            tokio::task::spawn_blocking(move || replace_data(&bundle, &into, &data))
                .await
                .map_err(|e| InstallError::Plan(e.to_string()))??;
        }
        let catalog_app = self.catalog_app(app)?;
        let old = AppRecord {
            app_version: point.from_version.clone(),
            ..app.clone()
        };
        let (compose, rendered) = render(&old, catalog_app, &folder)?;
        // The old images are still here: no registry is asked.
        let images = self
            .pull(&compose, &Arc::new(Progress::default()), true)
            .await?;
        let mut prepared = self.prepare(&old, &compose, &images, &folder).await?;
        prepared.plan.secrets.push(app.password.clone());
        self.create(
            &old,
            catalog_app,
            &folder,
            &rendered,
            &prepared,
            &CancellationToken::new(),
        )
        .await?;
        if point.was_running {
            self.init(&old).await?;
        }
        Ok(())
    }

    /// The app's rollback point; rebuilt from the record if it went (removed by hand):
    /// nothing then says the data was saved, so it is not restored.
    fn point_of(&self, app: &AppRecord) -> RollbackPoint {
        let folder = AppFolder::new(&self.config.state_dir, &app.app_id);
        read_point(&folder).unwrap_or_else(|| {
            tracing::error!(app_id = app.app_id, "the upgrade's rollback point is gone");
            let operation = app.operation.as_ref();
            RollbackPoint {
                from_version: operation
                    .and_then(|o| o.from_version.clone())
                    .unwrap_or_else(|| app.app_version.clone()),
                to_version: operation
                    .and_then(|o| o.to_version.clone())
                    .unwrap_or_default(),
                was_running: true,
                backup: None,
                stopped_at: None,
                downtime_ms: None,
            }
        })
    }

    /// At start-up, before the queue runs: an upgrade a crash cut short rolls back.
    pub(super) async fn resume_upgrades(&self) {
        let apps = self.cut_short(OperationKind::Upgrade).await;
        for app in apps.into_iter().filter(|a| a.phase.is_installing()) {
            let app_id = app.app_id.as_str();
            let Ok(_busy) = self.begin(app_id, Operation::Upgrade) else {
                continue;
            };
            tracing::warn!(
                app_id,
                phase = app.phase.as_str(),
                "upgrade was interrupted: rolling it back"
            );
            let mut point = self.point_of(&app);
            let reason = StatusReason {
                code: crate::error::Code::SystemError,
                detail: format!(
                    "the upgrade to {} was rolled back: appunitd stopped while it was {}",
                    point.to_version,
                    app.phase.as_str()
                ),
            };
            self.roll_back(&app, &mut point, reason).await;
        }
    }
}

/// The app's data as the bundle holds it, byte for byte: what is there now goes first
/// (the new version may have added files).
fn replace_data(bundle: &Path, into: &Path, data: &Path) -> Result<(), InstallError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InstallError::Io { path, source }
    };
    match std::fs::remove_dir_all(data) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(io(data)(err)),
        _ => {}
    }
    backup::unpack(bundle, into).map_err(io(bundle))
}
