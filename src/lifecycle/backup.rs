//! Backups of installed apps, and the first step of a restore. A backup runs in the
//! background under the app's busy guard: images are written first (the app serves
//! meanwhile), then the app is stopped while its data is read and started again; the
//! downtime goes into `last_operation`.

use super::{InstallError, Lifecycle, Operation};
use crate::app::plan::AppPlan;
use crate::app::{AppFolder, Credentials, redact, unit_name};
use crate::backup::{self, Contents, Manifest, PinnedImage};
use crate::error::{AppError, Code};
use crate::runtime::systemd::UnitState;
use crate::store::{AppRecord, OperationInfo, OperationKind, OperationResult, StatusReason};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// Why a backup failed, and how long the app was down before it did.
struct Failed {
    reason: StatusReason,
    downtime_ms: Option<u64>,
}

fn failed(code: Code, detail: String) -> Failed {
    Failed {
        reason: StatusReason { code, detail },
        downtime_ms: None,
    }
}

impl Lifecycle {
    /// AppBackup: answers once the backup is under way (or busy), and runs it in the
    /// background to `path`.
    pub async fn start_backup(
        self: &Arc<Self>,
        record: AppRecord,
        path: PathBuf,
        include_images: bool,
    ) -> Result<(), AppError> {
        let app_id = record.app_id.clone();
        let info = OperationInfo {
            kind: OperationKind::Backup,
            from_version: Some(record.app_version.clone()),
            to_version: None,
            source: path.file_name().map(|n| n.to_string_lossy().to_string()),
        };
        let begin = move |lifecycle: Arc<Lifecycle>| async move {
            lifecycle
                .store
                .blocking(move |store| store.begin_operation(&record, &info))
                .await
                .map_err(AppError::from)
        };
        let run = move |lifecycle: Arc<Lifecycle>, record: AppRecord| async move {
            let app_id = record.app_id.clone();
            let outcome = lifecycle.backup(&record, &path, include_images).await;
            let (result, reason, downtime_ms) = match outcome {
                Ok(downtime_ms) => {
                    tracing::info!(app_id, backup = %path.display(), downtime_ms, "backed up");
                    (OperationResult::Succeeded, None, Some(downtime_ms))
                }
                Err(Failed {
                    reason,
                    downtime_ms,
                }) => {
                    tracing::error!(app_id, detail = reason.detail, "backup failed");
                    (OperationResult::Failed, Some(reason), downtime_ms)
                }
            };
            let ended = lifecycle
                .store
                .blocking(move |store| {
                    store.end_operation(&record, result, reason.as_ref(), downtime_ms)
                })
                .await;
            if let Err(err) = ended {
                tracing::error!(app_id, %err, "recording the backup's end");
            }
            lifecycle.changed(&app_id);
        };
        self.in_background(&app_id, Operation::Backup, begin, run)
            .await
    }

    /// Writes the bundle; the app's downtime in ms.
    async fn backup(
        &self,
        record: &AppRecord,
        path: &Path,
        include_images: bool,
    ) -> Result<u64, Failed> {
        let app_id = record.app_id.as_str();
        let folder = AppFolder::new(&self.config.state_dir, app_id);
        let secrets = [record.password.clone()];
        let system = |e: String| failed(Code::SystemError, redact(&e, &secrets));
        let manifest = self
            .manifest(record, &folder, include_images)
            .map_err(system)?;
        let layout = backup::work_path(path, "images");
        let result = async {
            if include_images {
                let references: Vec<String> = manifest
                    .images
                    .iter()
                    .map(|i| i.reference.clone())
                    .collect();
                self.backends
                    .images
                    .export_layout(&references, &layout)
                    .await
                    .map_err(|e| failed(Code::ContainerError, e.to_string()))?;
            }
            self.write_stopped(
                record,
                &folder,
                path,
                manifest,
                include_images.then_some(&layout),
            )
            .await
        }
        .await;
        if include_images {
            let _ = std::fs::remove_dir_all(&layout);
        }
        result
    }

    /// Stops the app if it runs, writes the bundle, starts the app again.
    async fn write_stopped(
        &self,
        record: &AppRecord,
        folder: &AppFolder,
        path: &Path,
        manifest: Manifest,
        layout: Option<&PathBuf>,
    ) -> Result<u64, Failed> {
        let unit = unit_name(&record.app_id);
        let units = &self.backends.units;
        let container =
            |e: crate::runtime::systemd::SystemdError| failed(Code::ContainerError, e.to_string());
        let running = units.status(&unit).await.map_err(container)?.state == UnitState::Active;
        let down = Instant::now();
        // Tells a daemon that restarts after a crash here that the app is to run again.
        let stopped = backup::work_path(path, "stopped");
        if running {
            std::fs::write(&stopped, b"")
                .map_err(|e| failed(Code::SystemError, format!("{}: {e}", stopped.display())))?;
            if let Err(err) = units.stop(&unit).await {
                let _ = std::fs::remove_file(&stopped);
                return Err(container(err));
            }
        }
        let (bundle, data, images) = (path.to_path_buf(), folder.data(), layout.cloned());
        let written = tokio::task::spawn_blocking(move || {
            let contents = Contents {
                data: &data,
                images: images.as_deref(),
            };
            backup::write(&bundle, &manifest, &contents)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| format!("writing {}: {e}", path.display())));
        let started = match running {
            true => units.start(&unit).await.map_err(|e| e.to_string()),
            false => Ok(()),
        };
        let _ = std::fs::remove_file(&stopped);
        let downtime_ms = running.then(|| down.elapsed().as_millis() as u64);
        let problems: Vec<String> = [written.err(), started.err()]
            .into_iter()
            .flatten()
            .collect();
        if problems.is_empty() {
            Ok(downtime_ms.unwrap_or(0))
        } else {
            Err(Failed {
                reason: StatusReason {
                    code: Code::SystemError,
                    detail: problems.join("; "),
                },
                downtime_ms,
            })
        }
    }

    /// At start-up: backups a crash cut short. Their work files go (a bundle not yet
    /// renamed into place is not one), an app the backup stopped is started again, and
    /// the backup ends as failed, or as succeeded when its bundle was already in place.
    pub(super) async fn finish_interrupted_backups(&self) {
        let cut = self.cut_short(OperationKind::Backup).await;
        for record in cut {
            let app_id = record.app_id.clone();
            let Ok(_busy) = self.begin(&app_id, Operation::Backup) else {
                continue;
            };
            let bundle = record.operation.as_ref().and_then(|o| o.source.clone());
            let bundle = self.config.backup_dir().join(bundle.unwrap_or_default());
            let stopped = backup::work_path(&bundle, "stopped").exists();
            let written = backup::clean_after(&bundle);
            let started = match stopped {
                true => self.backends.units.start(&unit_name(&app_id)).await,
                false => Ok(()),
            };
            tracing::warn!(app_id, ?written, stopped, "backup was interrupted");
            let reason = match (&written, &started) {
                (Ok(true), Ok(())) => None,
                (Ok(false), Ok(())) => Some(format!(
                    "appunitd stopped while writing {}: no bundle was kept",
                    bundle.display()
                )),
                (Err(err), _) => Some(format!("cleaning up after {}: {err}", bundle.display())),
                (_, Err(err)) => Some(format!("starting the app again: {err}")),
            };
            let result = match reason {
                None => OperationResult::Succeeded,
                Some(_) => OperationResult::Failed,
            };
            let reason = reason.map(|detail| StatusReason {
                code: Code::SystemError,
                detail,
            });
            let ended = self
                .store
                .blocking(move |store| store.end_operation(&record, result, reason.as_ref(), None))
                .await;
            if let Err(err) = ended {
                tracing::error!(app_id, %err, "recording the interrupted backup's end");
            }
            self.changed(&app_id);
        }
    }

    /// The manifest: the record, the catalog's app.toml, the compose file as
    /// installed, the pinned digests (from the plan) and the credentials.
    pub(super) fn manifest(
        &self,
        record: &AppRecord,
        folder: &AppFolder,
        include_images: bool,
    ) -> Result<Manifest, String> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
        };
        let plan: AppPlan = serde_json::from_str(&read(&folder.plan_file())?)
            .map_err(|e| format!("{}: {e}", folder.plan_file().display()))?;
        let mut images: Vec<PinnedImage> = plan
            .services
            .iter()
            .map(|s| PinnedImage {
                reference: s.image.clone(),
                digest: s.digest.clone(),
            })
            .collect();
        images.sort_by(|a, b| a.reference.cmp(&b.reference));
        images.dedup();
        let app_toml = match self.catalog.get(&record.app_name) {
            Some(app) => read(&app.folder.join("app.toml"))?,
            None => String::new(),
        };
        Ok(Manifest {
            format: backup::FORMAT_VERSION,
            app_id: record.app_id.clone(),
            app_name: record.app_name.clone(),
            app_version: record.app_version.clone(),
            created: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            http_port: record.http_port,
            app_toml,
            compose_yaml: read(&folder.compose_file())?,
            images,
            credentials: Credentials {
                app_name: record.app_name.clone(),
                password: record.password.clone(),
            },
            include_images,
        })
    }

    /// A restore's first step, in the install pipeline: the backup's data into the
    /// app's folder and its images into containerd (no registry asked). Done again
    /// when a restore cut short is resumed: the bundle's files replace what is there.
    pub(super) async fn restore_from(
        &self,
        app: &AppRecord,
        bundle: &str,
        folder: &AppFolder,
    ) -> Result<(), InstallError> {
        let path = self.config.backup_dir().join(bundle);
        let into = folder.path().to_path_buf();
        let images = into.join("images");
        let unpacked = {
            let (path, into) = (path.clone(), into.clone());
            tokio::task::spawn_blocking(move || backup::unpack(&path, &into))
        };
        unpacked
            .await
            .map_err(|e| InstallError::Plan(e.to_string()))?
            .map_err(|source| InstallError::Io { path, source })?;
        if images.exists() {
            let imported = self.backends.images.import_layout(&images).await;
            let _ = std::fs::remove_dir_all(&images);
            let names = imported?;
            tracing::info!(
                app_id = app.app_id,
                ?names,
                "images restored from the backup"
            );
        }
        Ok(())
    }
}
