//! The seven Actions: validation in the seed's order (blank, format, existence), then
//! the lifecycle step. Answers are plain data; the api layer wraps them.

mod backups;
pub mod events;
pub mod params;
mod upgrade;

use crate::app::{AppFolder, unit_name};
use crate::catalog::{Catalog, CatalogApp};
use crate::config::Config;
use crate::error::{AppError, Code};
use crate::host;
use crate::images::progress::ProgressInfo;
use crate::lifecycle::{Change, Lifecycle, Operation, Status, Truth};
use crate::messages::{Language, message};
use crate::runtime::journal::{self, LogEntry};
use crate::runtime::systemd::Usage;
use crate::state::AppState;
use crate::store::{AppRecord, NewApp, Phase, Store, StoreError, UninstallRequest};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use params::Params;
use rand::distr::{Alphanumeric, SampleString};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Install,
    Uninstall,
    Start,
    Stop,
    Restart,
    Status,
    List,
    Logs,
    Backup,
    BackupList,
    BackupDelete,
    Restore,
    Upgrade,
}

impl Action {
    pub fn from_name(name: &str) -> Option<Action> {
        Some(match name {
            "AppInstall" => Action::Install,
            "AppUninstall" => Action::Uninstall,
            "AppStart" => Action::Start,
            "AppStop" => Action::Stop,
            "AppRestart" => Action::Restart,
            "AppStatus" => Action::Status,
            "AppList" => Action::List,
            "AppLogs" => Action::Logs,
            "AppBackup" => Action::Backup,
            "AppBackupList" => Action::BackupList,
            "AppBackupDelete" => Action::BackupDelete,
            "AppRestore" => Action::Restore,
            "AppUpgrade" => Action::Upgrade,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::Install => "AppInstall",
            Action::Uninstall => "AppUninstall",
            Action::Start => "AppStart",
            Action::Stop => "AppStop",
            Action::Restart => "AppRestart",
            Action::Status => "AppStatus",
            Action::List => "AppList",
            Action::Logs => "AppLogs",
            Action::Backup => "AppBackup",
            Action::BackupList => "AppBackupList",
            Action::BackupDelete => "AppBackupDelete",
            Action::Restore => "AppRestore",
            Action::Upgrade => "AppUpgrade",
        }
    }

    /// The parameter naming the app, for Actions that answer `{"app_id"}` even on failure.
    fn id_param(self) -> Option<&'static str> {
        match self {
            Action::Install | Action::Restore => Some("customer_app_name"),
            Action::Status
            | Action::List
            | Action::Logs
            | Action::BackupList
            | Action::BackupDelete => None,
            _ => Some("app_id"),
        }
    }

    /// `ResponseData` when the call failed: `{"app_id"}` for mutating Actions when the
    /// request names a well-formed id, else null.
    pub fn failure_data(self, params: &Params) -> Option<Reply> {
        self.id_param()
            .and_then(|name| params.text(name).ok().flatten())
            .filter(|id| is_valid_app_id(id))
            .map(|id| Reply::AppId {
                app_id: id.to_string(),
            })
    }
}

/// `^[a-z0-9]{2,32}$`: the id goes verbatim into unit names and paths, so this is also
/// the injection guard.
pub fn is_valid_app_id(id: &str) -> bool {
    (2..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// AppLogs' `lines`: its default and its most.
const DEFAULT_LOG_LINES: u32 = 100;
const MAX_LOG_LINES: u32 = 10_000;

/// What a successful Action answers: `ResponseData`, or a stream of Server-Sent Events
/// (AppLogs with `follow=true`) whose frames are ready to send.
pub enum Answer {
    Reply(Reply),
    /// AppStatus and AppList: `ResponseData` already JSON (kept rendered in the model).
    Json(Bytes),
    Stream(BoxStream<'static, Bytes>),
}

/// What a successful Action answers: the envelope's `ResponseData`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Reply {
    AppId { app_id: String },
    Logs(Vec<LogEntry>),
    Backup { app_id: String, backup: String },
    BackupName { backup: String },
    Backups(Vec<crate::backup::BackupInfo>),
}

/// AppStatusInfo / AppDetailInfo (SPEC); one shape serves both.
#[derive(Debug, Serialize)]
pub struct AppDetailInfo {
    pub app_id: String,
    pub name: String,
    pub customer_name: String,
    pub trade_mark: String,
    pub app_version: String,
    pub status_code: &'static str,
    pub status: &'static str,
    pub status_reason: Option<ReasonInfo>,
    pub progress: Option<ProgressInfo>,
    pub official_app: bool,
    pub image_url: String,
    pub running_info: Option<RunningInfo>,
    /// The app's slice while it runs, from systemd.
    pub usage: Option<Usage>,
    pub operation: Option<OperationJson>,
    pub last_operation: Option<LastOperationJson>,
}

/// SPEC `operation`: the one under way.
#[derive(Debug, Serialize)]
pub struct OperationJson {
    pub kind: &'static str,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
}

/// SPEC `last_operation`: how the last one ended.
#[derive(Debug, Serialize)]
pub struct LastOperationJson {
    pub kind: &'static str,
    pub result: &'static str,
    pub reason: Option<ReasonInfo>,
    /// RFC 3339.
    pub finished: String,
    pub downtime_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReasonInfo {
    pub code: Code,
    pub message: &'static str,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct RunningInfo {
    pub port: u16,
    pub compose_file: PathBuf,
    pub url: String,
    pub admin_url: String,
    pub user_name: String,
    pub password: String,
    pub default_domain: String,
    pub set_domain: String,
}

pub struct Actions {
    store: Arc<Store>,
    catalog: Arc<Catalog>,
    config: Arc<Config>,
    lifecycle: Arc<Lifecycle>,
    public_host: String,
}

impl Actions {
    pub fn new(
        store: Arc<Store>,
        catalog: Arc<Catalog>,
        config: Arc<Config>,
        lifecycle: Arc<Lifecycle>,
    ) -> Actions {
        let public_host = if config.public_host.is_empty() {
            host::primary_address()
        } else {
            config.public_host.clone()
        };
        Actions {
            store,
            catalog,
            config,
            lifecycle,
            public_host,
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub async fn call(
        &self,
        action: Action,
        params: &Params,
        language: Language,
    ) -> Result<Answer, AppError> {
        let reply = match action {
            Action::Install => self.install(params).await.map(app_id_data),
            Action::Uninstall => self.uninstall(params).await.map(app_id_data),
            Action::Start | Action::Stop | Action::Restart => {
                self.change_state(action, params).await.map(app_id_data)
            }
            Action::Status => return self.status(params, language).await.map(Answer::Json),
            Action::List => return self.list(params, language).await.map(Answer::Json),
            Action::Logs => return self.logs(params).await,
            Action::Backup => {
                let (app_id, backup) = self.backup(params).await?;
                Ok(Reply::Backup { app_id, backup })
            }
            Action::BackupList => Ok(Reply::Backups(self.backup_list(params).await?)),
            Action::BackupDelete => Ok(Reply::BackupName {
                backup: self.backup_delete(params).await?,
            }),
            Action::Restore => self.restore(params).await.map(app_id_data),
            Action::Upgrade => self.upgrade(params).await.map(app_id_data),
        };
        reply.map(Answer::Reply)
    }

    async fn install(&self, params: &Params) -> Result<String, AppError> {
        let app_name = params.text("app_name")?.ok_or(AppError::AppNameBlank)?;
        let app = self
            .catalog
            .get(app_name)
            .ok_or_else(|| AppError::AppNameNotExist(app_name.into()))?;
        let app_id = params
            .text("customer_app_name")?
            .ok_or(AppError::CustomerAppNameBlank)?;
        if !is_valid_app_id(app_id) {
            return Err(AppError::CustomerAppNameFormat);
        }
        if let Some(existing) = self.record(app_id).await? {
            return Err(name_taken(existing.app_id, existing.phase));
        }
        let kept = self.lifecycle.kept_credentials(app_id).await?;
        if let Some(kept) = kept.as_ref().filter(|kept| kept.app_name != app_name) {
            return Err(AppError::KeptDataOf {
                app_id: app_id.into(),
                app_name: kept.app_name.clone(),
            });
        }
        let version = params
            .text("app_version")?
            .ok_or(AppError::AppVersionBlank)?;
        if !app.meta.versions.iter().any(|v| v == version) {
            return Err(AppError::AppVersionNotExist(format!(
                "{app_name} has no version {version:?}; it has {}",
                app.meta.versions.join(", ")
            )));
        }
        self.check_requirements(app, "install")?;
        let _busy = self.lifecycle.begin(app_id, Operation::Install)?;
        // Kept data expects its own password; a new install gets one never used before.
        let password = kept.map_or_else(
            || Alphanumeric.sample_string(&mut rand::rng(), 20),
            |kept| kept.password,
        );
        let (id, name, owned_version) = (
            app_id.to_string(),
            app_name.to_string(),
            version.to_string(),
        );
        let default_port = app.meta.http_port;
        let fixed_port = app.web_on_host_network();
        let inserted = self
            .store
            .blocking(move |store| {
                let new_app = NewApp {
                    app_id: &id,
                    app_name: &name,
                    app_version: &owned_version,
                    password: &password,
                    default_port,
                    fixed_port,
                };
                store.insert_queued(&new_app, &host::listening_tcp_ports())
            })
            .await;
        match inserted {
            Ok(record) => {
                tracing::info!(
                    app_id,
                    app_name,
                    version,
                    port = record.http_port,
                    "install queued"
                );
                self.lifecycle.queued(&record.app_id);
                Ok(record.app_id)
            }
            Err(StoreError::Exists(id, status)) => Err(name_taken(id, status)),
            Err(err) => Err(err.into()),
        }
    }

    /// What the host must offer before `app` is installed or restored (`verb`): its
    /// declared resources, and host access where it needs it.
    fn check_requirements(&self, app: &CatalogApp, verb: &str) -> Result<(), AppError> {
        let resources = host::Resources::probe(&self.config.state_dir)
            .map_err(|e| AppError::System(format!("reading host resources: {e}")))?;
        let shortfalls = resources.shortfalls(&app.meta.requirements);
        if !shortfalls.is_empty() {
            return Err(AppError::RequirementNotEnough(shortfalls.join("; ")));
        }
        if app.host_access && !self.config.allow_host_access {
            return Err(AppError::RequirementHostAccess(format!(
                "{} needs host access ({}); set allow_host_access = true to {verb} it",
                app.meta.name,
                app.host_access_keys().join(", ")
            )));
        }
        Ok(())
    }

    async fn uninstall(&self, params: &Params) -> Result<String, AppError> {
        let app_id = required_app_id(params)?;
        let delete_image = params.flag("delete_image", false)?;
        let delete_data = params.flag("delete_data", true)?;
        let _busy = self.lifecycle.begin(app_id, Operation::Uninstall)?;
        let Some(record) = self.record(app_id).await? else {
            if delete_data && self.lifecycle.kept_credentials(app_id).await?.is_some() {
                self.lifecycle.delete_kept(app_id).await?;
                tracing::info!(app_id, "deleted the kept data");
                return Ok(app_id.to_string());
            }
            return Err(AppError::AppIdNotExist(app_id.into()));
        };
        let request = UninstallRequest {
            delete_data,
            delete_image,
        };
        self.lifecycle.uninstall(&record, request).await?;
        tracing::info!(app_id, delete_data, delete_image, "uninstalled");
        Ok(app_id.to_string())
    }

    async fn change_state(&self, action: Action, params: &Params) -> Result<String, AppError> {
        let app_id = required_app_id(params)?;
        let (operation, change) = match action {
            Action::Start => (Operation::Start, Change::Start),
            Action::Stop => (Operation::Stop, Change::Stop),
            _ => (Operation::Restart, Change::Restart),
        };
        let _busy = self.lifecycle.begin(app_id, operation)?;
        let record = self.existing(app_id).await?;
        require_installed(&record, action.name(), "uninstall it and install it again")?;
        self.lifecycle.change(app_id, change).await?;
        Ok(app_id.to_string())
    }

    /// AppLogs: the app unit's journal, oldest first.
    async fn logs(&self, params: &Params) -> Result<Answer, AppError> {
        let app_id = required_app_id(params)?;
        let lines = match params.text("lines")? {
            None => DEFAULT_LOG_LINES,
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_LOG_LINES).contains(n))
                .ok_or_else(|| {
                    AppError::Format(format!("lines must be from 1 to {MAX_LOG_LINES}"))
                })?,
        };
        let follow = params.flag("follow", false)?;
        let service = params.text("service")?;
        self.existing(app_id).await?;
        let unit = unit_name(app_id);
        let failed = |e: journal::JournalError| AppError::System(e.to_string());
        if follow {
            let entries = journal::follow(&unit, service, lines).map_err(failed)?;
            let frames = futures_util::stream::unfold(entries, |mut entries| async move {
                let entry = entries.recv().await?;
                Some((events::data_frame(&entry), entries))
            });
            return Ok(Answer::Stream(events::with_keep_alive(frames.boxed())));
        }
        let entries = journal::tail(&unit, service, lines).await.map_err(failed)?;
        Ok(Answer::Reply(Reply::Logs(entries)))
    }

    async fn status(&self, params: &Params, language: Language) -> Result<Bytes, AppError> {
        let app_id = required_app_id(params)?;
        let app = self.lifecycle.model().get(app_id).await;
        let app = app.ok_or_else(|| AppError::AppIdNotExist(app_id.into()))?;
        Ok(self.json(&app, language))
    }

    /// AppList's `ResponseData`: the array of every app (or the one named) as JSON.
    async fn list(&self, params: &Params, language: Language) -> Result<Bytes, AppError> {
        let only = params.text("customer_app_name")?;
        if only.is_some_and(|name| !is_valid_app_id(name)) {
            return Err(AppError::CustomerAppNameFormat);
        }
        let model = self.lifecycle.model();
        Ok(match only {
            None => {
                let render = |app: &AppState| self.render(app, language);
                model.list_json(language, render).await
            }
            Some(_) => {
                let apps = model.list(only).await;
                let items: Vec<Bytes> = apps.iter().map(|app| self.json(app, language)).collect();
                crate::state::json_array(&items)
            }
        })
    }

    /// The app's AppStatusInfo as JSON, rendered once per language until it changes.
    fn json(&self, app: &AppState, language: Language) -> Bytes {
        app.json(language, |app| self.render(app, language))
    }

    fn render(&self, app: &AppState, language: Language) -> Bytes {
        // Serializing plain strings and numbers cannot fail.
        Bytes::from(serde_json::to_vec(&self.detail(app, language)).unwrap_or_default())
    }

    async fn record(&self, app_id: &str) -> Result<Option<AppRecord>, AppError> {
        let id = app_id.to_string();
        Ok(self.store.blocking(move |store| store.get(&id)).await?)
    }

    async fn existing(&self, app_id: &str) -> Result<AppRecord, AppError> {
        self.record(app_id)
            .await?
            .ok_or_else(|| AppError::AppIdNotExist(app_id.into()))
    }

    fn detail(&self, state: &AppState, language: Language) -> AppDetailInfo {
        let record = &state.record;
        // The catalog may have dropped an app since it was installed: the app still shows.
        let app: Option<&CatalogApp> = self.catalog.get(&record.app_name);
        // The model reads an installed app's unit before it serves it.
        let mut truth = state
            .truth
            .clone()
            .unwrap_or_else(|| Truth::plain(Status::Initing));
        // A rolled-back upgrade's cause shows until the next operation.
        if record.phase == Phase::Installed && truth.reason.is_none() {
            truth.reason = record.reason.clone();
        }
        let running_info = (truth.status == Status::Running).then(|| {
            let url = format!("http://{}:{}", self.public_host, record.http_port);
            RunningInfo {
                port: record.http_port,
                compose_file: AppFolder::new(&self.config.state_dir, &record.app_id).compose_file(),
                admin_url: format!("{url}{}", app.map_or("", |a| a.meta.admin_path.as_str())),
                url,
                user_name: app.map(|a| a.meta.user_name.clone()).unwrap_or_default(),
                password: record.password.clone(),
                default_domain: String::new(),
                set_domain: String::new(),
            }
        });
        let usage = state.usage.filter(|_| truth.status == Status::Running);
        let operation = record.operation.as_ref().map(|o| OperationJson {
            kind: o.kind.as_str(),
            from_version: o.from_version.clone(),
            to_version: o.to_version.clone(),
        });
        let last_operation = record
            .last_operation
            .as_ref()
            .map(|last| LastOperationJson {
                kind: last.kind.as_str(),
                result: last.result.as_str(),
                reason: last.reason.as_ref().map(|reason| ReasonInfo {
                    message: message(reason.code, language),
                    code: reason.code,
                    detail: reason.detail.clone(),
                }),
                finished: humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_secs(last.finished.max(0) as u64),
                )
                .to_string(),
                downtime_ms: last.downtime_ms,
            });
        AppDetailInfo {
            operation,
            last_operation,
            usage,
            status_code: truth.status.code(),
            status: truth.status.as_str(),
            status_reason: truth.reason.map(|reason| ReasonInfo {
                message: message(reason.code, language),
                code: reason.code,
                detail: reason.detail,
            }),
            progress: truth.progress,
            trade_mark: app.map_or_else(|| record.app_name.clone(), |a| a.meta.trademark.clone()),
            official_app: app.is_some_and(|a| a.meta.official),
            image_url: app.map(CatalogApp::image_url).unwrap_or_default(),
            running_info,
            customer_name: record.app_id.clone(),
            app_id: record.app_id.clone(),
            name: record.app_name.clone(),
            app_version: record.app_version.clone(),
        }
    }
}

/// An Action on an installed app: refused while its install runs, or after it failed
/// (`failed_hint` says what to do then).
fn require_installed(record: &AppRecord, action: &str, failed_hint: &str) -> Result<(), AppError> {
    match record.phase {
        Phase::Installed => Ok(()),
        Phase::Failed => Err(AppError::Container(format!(
            "the install of {} failed: {failed_hint}",
            record.app_id
        ))),
        phase => Err(AppError::Busy(format!(
            "{action} waits for the install, which is {}",
            phase.as_str()
        ))),
    }
}

fn app_id_data(app_id: String) -> Reply {
    Reply::AppId { app_id }
}

fn required_app_id(params: &Params) -> Result<&str, AppError> {
    let app_id = params.text("app_id")?.ok_or(AppError::AppIdBlank)?;
    if !is_valid_app_id(app_id) {
        return Err(AppError::AppIdFormat);
    }
    Ok(app_id)
}

fn name_taken(app_id: String, phase: Phase) -> AppError {
    if phase.is_installing() {
        AppError::CustomerAppNameWait(app_id, phase.as_str())
    } else {
        AppError::CustomerAppNameRepeat(app_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_id_format() {
        for ok in ["ab", "blog", "a1", &"z".repeat(32)] {
            assert!(is_valid_app_id(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "Blog",
            "my-app",
            "a b",
            "../x",
            &"z".repeat(33),
            "ü1",
        ] {
            assert!(!is_valid_app_id(bad), "{bad}");
        }
    }

    #[test]
    fn action_names_round_trip() {
        for action in [
            Action::Install,
            Action::Uninstall,
            Action::Start,
            Action::Stop,
            Action::Restart,
            Action::Status,
            Action::List,
            Action::Logs,
            Action::Backup,
            Action::BackupList,
            Action::BackupDelete,
            Action::Restore,
            Action::Upgrade,
        ] {
            assert_eq!(Action::from_name(action.name()), Some(action));
        }
        assert_eq!(Action::from_name("appinstall"), None);
    }
}
