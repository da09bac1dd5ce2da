//! AppBackup, AppBackupList, AppBackupDelete and AppRestore (SPEC "Beyond the seed"),
//! checked in the seed's order: blank, format, existence, then resources.

use super::params::Params;
use super::{Actions, is_valid_app_id, name_taken, require_installed, required_app_id};
use crate::app::AppFolder;
use crate::backup::{self, BackupInfo};
use crate::error::AppError;
use crate::host;
use crate::lifecycle::Operation;
use crate::store::{NewApp, OperationKind, StoreError};
use std::path::PathBuf;

impl Actions {
    /// AppBackup: `(app_id, backup)` once the backup runs.
    pub(super) async fn backup(&self, params: &Params) -> Result<(String, String), AppError> {
        let app_id = required_app_id(params)?;
        let include_images = params.flag("include_images", false)?;
        let record = self.existing(app_id).await?;
        require_installed(&record, "AppBackup", "there is nothing to back up")?;
        let dir = self.config.backup_dir();
        let data = AppFolder::new(&self.config.state_dir, app_id).data();
        let name = backup::bundle_name(app_id, std::time::SystemTime::now());
        let check_dir = dir.clone();
        tokio::task::spawn_blocking(move || fits(&check_dir, &data))
            .await
            .map_err(|e| AppError::System(e.to_string()))??;
        self.lifecycle
            .start_backup(record, dir.join(&name), include_images)
            .await?;
        tracing::info!(app_id, backup = name, include_images, "backup started");
        Ok((app_id.to_string(), name))
    }

    /// AppBackupList: newest first, optionally of one app.
    pub(super) async fn backup_list(&self, params: &Params) -> Result<Vec<BackupInfo>, AppError> {
        let only = params.text("app_id")?.map(str::to_string);
        if only.as_deref().is_some_and(|id| !is_valid_app_id(id)) {
            return Err(AppError::AppIdFormat);
        }
        let dir = self.config.backup_dir();
        tokio::task::spawn_blocking(move || backup::list(&dir, only.as_deref()))
            .await
            .map_err(|e| AppError::System(e.to_string()))?
            .map_err(|e| AppError::System(format!("reading the backups: {e}")))
    }

    /// AppBackupDelete.
    pub(super) async fn backup_delete(&self, params: &Params) -> Result<String, AppError> {
        let path = self.existing_backup(params)?;
        tokio::task::spawn_blocking(move || backup::delete(&path))
            .await
            .map_err(|e| AppError::System(e.to_string()))?
            .map_err(|e| AppError::System(format!("deleting the backup: {e}")))?;
        Ok(params.text("backup")?.unwrap_or_default().to_string())
    }

    /// AppRestore: queues an install that starts from the backup's data and images.
    pub(super) async fn restore(&self, params: &Params) -> Result<String, AppError> {
        let path = self.existing_backup(params)?;
        let read = path.clone();
        let manifest = tokio::task::spawn_blocking(move || backup::read_manifest(&read))
            .await
            .map_err(|e| AppError::System(e.to_string()))?
            .map_err(|e| AppError::BackupNotExist(format!("{}: {e}", path.display())))?;
        let app_id = match params.text("customer_app_name")? {
            Some(name) => name.to_string(),
            None => manifest.app_id.clone(),
        };
        if !is_valid_app_id(&app_id) {
            return Err(AppError::CustomerAppNameFormat);
        }
        if let Some(existing) = self.record(&app_id).await? {
            return Err(name_taken(existing.app_id, existing.phase));
        }
        if let Some(kept) = self.lifecycle.kept_credentials(&app_id).await? {
            return Err(AppError::KeptDataOf {
                app_id,
                app_name: kept.app_name,
            });
        }
        let app = self
            .catalog
            .get(&manifest.app_name)
            .ok_or_else(|| AppError::AppNameNotExist(manifest.app_name.clone()))?;
        if !app.meta.versions.contains(&manifest.app_version) {
            return Err(AppError::AppVersionNotExist(format!(
                "the backup is of {} {}, which the catalog no longer has",
                manifest.app_name, manifest.app_version
            )));
        }
        self.check_requirements(app, "restore")?;
        let _busy = self.lifecycle.begin(&app_id, Operation::Restore)?;
        let bundle = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let default_port = app.meta.http_port;
        let fixed_port = app.web_on_host_network();
        let id = app_id.clone();
        let inserted = self
            .store
            .blocking(move |store| {
                let new_app = NewApp {
                    app_id: &id,
                    app_name: &manifest.app_name,
                    app_version: &manifest.app_version,
                    password: &manifest.credentials.password,
                    default_port,
                    fixed_port,
                };
                store.insert_queued_for(
                    &new_app,
                    OperationKind::Restore,
                    Some(&bundle),
                    &host::listening_tcp_ports(),
                )
            })
            .await;
        match inserted {
            Ok(record) => {
                tracing::info!(app_id, backup = %path.display(), "restore queued");
                self.lifecycle.queued(&record.app_id);
                Ok(record.app_id)
            }
            Err(StoreError::Exists(id, status)) => Err(name_taken(id, status)),
            Err(err) => Err(err.into()),
        }
    }

    /// The bundle `backup` names in the backup folder.
    fn existing_backup(&self, params: &Params) -> Result<PathBuf, AppError> {
        let name = params.text("backup")?.ok_or(AppError::BackupBlank)?;
        let path = self.config.backup_dir().join(name);
        if !backup::is_bundle_name(name) || !path.is_file() {
            return Err(AppError::BackupNotExist(name.to_string()));
        }
        Ok(path)
    }
}

/// Whether a bundle of `data` fits in `dir` (made 0700 if missing): its data
/// uncompressed is the most it can take. Nothing is written when it does not fit.
fn fits(dir: &std::path::Path, data: &std::path::Path) -> Result<(), AppError> {
    use std::os::unix::fs::DirBuilderExt;
    let system = |e: std::io::Error| AppError::System(format!("{}: {e}", dir.display()));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(system)?;
    let needed = backup::tree_size(data).map_err(system)?;
    let stat = nix::sys::statvfs::statvfs(dir).map_err(|e| system(e.into()))?;
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    if needed > free {
        return Err(AppError::RequirementNotEnough(format!(
            "the backup needs up to {} MiB in {}, {} MiB are free",
            needed.div_ceil(1 << 20),
            dir.display(),
            free >> 20
        )));
    }
    Ok(())
}
