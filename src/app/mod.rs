//! One installed app on the host: the names it goes by (unit, slice, containers), the
//! places it keeps things, and the plan its supervisor follows. Below both the
//! lifecycle and the supervisor, which share these.

pub mod plan;

use serde::{Deserialize, Serialize};
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

    /// The app's credentials, 0600 beside its data: an uninstall that keeps the data
    /// keeps them too.
    pub fn credentials_file(&self) -> PathBuf {
        self.0.join("credentials.json")
    }

    /// The credentials kept with the app's data, if any.
    pub fn kept_credentials(&self) -> std::io::Result<Option<Credentials>> {
        match std::fs::read(self.credentials_file()) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(Into::into),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Which catalog app a name's data belongs to, and the password that data expects: a
/// later install of the same app reuses it, so a kept database accepts the app again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub app_name: String,
    pub password: String,
}

/// `text` with every secret in it masked: for what the status and the logs show.
pub fn redact(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|secret| !secret.is_empty())
        .fold(text.to_string(), |text, secret| {
            text.replace(secret.as_str(), "********")
        })
}
