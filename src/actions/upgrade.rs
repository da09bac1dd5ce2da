//! AppUpgrade (SPEC "Beyond the seed"), checked in the seed's order: blank, format,
//! existence; then the upgrade runs in the background.

use super::params::Params;
use super::{Actions, require_installed, required_app_id};
use crate::error::AppError;

impl Actions {
    /// AppUpgrade: the app's id once the upgrade runs.
    pub(super) async fn upgrade(&self, params: &Params) -> Result<String, AppError> {
        let app_id = required_app_id(params)?;
        let version = params
            .text("app_version")?
            .ok_or(AppError::AppVersionBlank)?;
        let record = self.existing(app_id).await?;
        let app = self
            .catalog
            .get(&record.app_name)
            .ok_or_else(|| AppError::AppNameNotExist(record.app_name.clone()))?;
        if !app.meta.versions.iter().any(|v| v == version) {
            return Err(AppError::AppVersionNotExist(format!(
                "{} has no version {version:?}; it has {}",
                record.app_name,
                app.meta.versions.join(", ")
            )));
        }
        require_installed(&record, "AppUpgrade", "uninstall it and install it again")?;
        let (from, to) = (record.app_version.clone(), version.to_string());
        self.lifecycle.start_upgrade(record, to.clone()).await?;
        tracing::info!(app_id, from, to, "upgrade started");
        Ok(app_id.to_string())
    }
}
