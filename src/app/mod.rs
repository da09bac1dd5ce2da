//! One installed app on the host: the names it goes by (unit, slice, containers), the
//! places it keeps things, and the plan its supervisor follows. Below both the
//! lifecycle and the supervisor, which share these.

pub mod plan;

use std::path::{Path, PathBuf};

pub fn unit_name(app_id: &str) -> String {
    format!("appunit-{app_id}.service")
}

pub fn slice_name(app_id: &str) -> String {
    format!("appunit-{app_id}.slice")
}

pub fn container_id(app_id: &str, service: &str) -> String {
    format!("{app_id}-{service}")
}

/// The app's folder under the state folder, and what lives in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppFolder(PathBuf);

impl AppFolder {
    pub fn new(state_dir: &Path, app_id: &str) -> AppFolder {
        AppFolder(state_dir.join("apps").join(app_id))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Named volumes; kept by an uninstall with `delete_data=false`.
    pub fn data(&self) -> PathBuf {
        self.0.join("data")
    }

    /// The rendered compose file, as `running_info.compose_file` shows it.
    pub fn compose_file(&self) -> PathBuf {
        self.0.join("compose.yaml")
    }

    /// The supervisor's plan, written at install, read at every start.
    pub fn plan_file(&self) -> PathBuf {
        self.0.join("plan.json")
    }

    /// The app's `/etc/hosts`.
    pub fn hosts_file(&self) -> PathBuf {
        self.0.join("hosts")
    }
}
