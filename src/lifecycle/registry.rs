//! What the daemon knows of each app beyond its record, in one place: the operation
//! under way on it (its busy guard), and its install task with that task's progress
//! and the token that stops it.

use crate::images::progress::Progress;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The lifecycle operations that exclude each other on one app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Install,
    Uninstall,
    Start,
    Stop,
    Restart,
    Backup,
    Restore,
    Upgrade,
}

impl Operation {
    pub fn action_name(self) -> &'static str {
        match self {
            Operation::Install => "AppInstall",
            Operation::Uninstall => "AppUninstall",
            Operation::Start => "AppStart",
            Operation::Stop => "AppStop",
            Operation::Restart => "AppRestart",
            Operation::Backup => "AppBackup",
            Operation::Restore => "AppRestore",
            Operation::Upgrade => "AppUpgrade",
        }
    }
}

/// An install running in the background. It is stopped through `cancel`, never
/// aborted: it ends at a step where nothing it started runs on, and the task's end
/// tells when.
pub struct InstallTask {
    pub task: JoinHandle<()>,
    pub progress: Arc<Progress>,
    pub cancel: CancellationToken,
}

#[derive(Default)]
struct Entry {
    operation: Option<Operation>,
    install: Option<InstallTask>,
    /// An upgrade's pull, shown as the app's progress while its guard is up.
    progress: Option<Arc<Progress>>,
}

#[derive(Default)]
pub struct Registry {
    apps: Mutex<HashMap<String, Entry>>,
}

/// Marks an operation on an app as under way until it drops.
pub struct Busy<'a> {
    registry: &'a Registry,
    app_id: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut apps = self.registry.lock();
        if let Some(entry) = apps.get_mut(&self.app_id) {
            entry.operation = None;
            entry.progress = None;
            forget_if_empty(&mut apps, &self.app_id);
        }
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Every change below is one assignment: a panic cannot leave an entry half made.
        self.apps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `operation` as under way on the app; the one already under way otherwise.
    pub fn begin(&self, app_id: &str, operation: Operation) -> Result<Busy<'_>, Operation> {
        let mut apps = self.lock();
        let entry = apps.entry(app_id.to_string()).or_default();
        if let Some(other) = entry.operation {
            return Err(other);
        }
        entry.operation = Some(operation);
        Ok(Busy {
            registry: self,
            app_id: app_id.to_string(),
        })
    }

    /// Shows `progress` as the app's while the guard of its operation (an upgrade) is up.
    pub fn show_progress(&self, app_id: &str, progress: Arc<Progress>) {
        if let Some(entry) = self.lock().get_mut(app_id) {
            entry.progress = Some(progress);
        }
    }

    /// Starts an install unless the app is being uninstalled (other operations refuse
    /// an app that is not installed, and an AppInstall's own guard is over once the
    /// app is queued). `start` runs under the registry's lock, so an uninstall that
    /// begins later finds the install registered and stops it; `start` answers None
    /// when the install must not start.
    pub fn start_install(
        &self,
        app_id: &str,
        start: impl FnOnce(Arc<Progress>, CancellationToken) -> Option<JoinHandle<()>>,
    ) -> bool {
        let mut apps = self.lock();
        let entry = apps.entry(app_id.to_string()).or_default();
        if entry.operation == Some(Operation::Uninstall) || entry.install.is_some() {
            forget_if_empty(&mut apps, app_id);
            return false;
        }
        let (progress, cancel) = (Arc::new(Progress::default()), CancellationToken::new());
        match start(progress.clone(), cancel.clone()) {
            Some(task) => {
                entry.install = Some(InstallTask {
                    task,
                    progress,
                    cancel,
                });
                true
            }
            None => {
                forget_if_empty(&mut apps, app_id);
                false
            }
        }
    }

    /// Called by the install task as it ends.
    pub fn install_ended(&self, app_id: &str, task: tokio::task::Id) {
        let mut apps = self.lock();
        if let Some(entry) = apps.get_mut(app_id)
            && entry.install.as_ref().is_some_and(|i| i.task.id() == task)
        {
            entry.install = None;
            forget_if_empty(&mut apps, app_id);
        }
    }

    /// Takes the app's install task away, for the caller to stop.
    pub fn take_install(&self, app_id: &str) -> Option<InstallTask> {
        let mut apps = self.lock();
        let install = apps.get_mut(app_id).and_then(|entry| entry.install.take());
        forget_if_empty(&mut apps, app_id);
        install
    }

    pub fn progress(&self, app_id: &str) -> Option<Arc<Progress>> {
        let apps = self.lock();
        let entry = apps.get(app_id)?;
        match &entry.install {
            Some(install) => Some(install.progress.clone()),
            None => entry.progress.clone(),
        }
    }

    #[cfg(test)]
    pub fn installs_running(&self) -> usize {
        self.lock().values().filter(|e| e.install.is_some()).count()
    }
}

fn forget_if_empty(apps: &mut HashMap<String, Entry>, app_id: &str) {
    if apps
        .get(app_id)
        .is_some_and(|e| e.operation.is_none() && e.install.is_none())
    {
        apps.remove(app_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_operation_at_a_time_per_app() {
        let registry = Registry::default();
        let stop = registry.begin("aa", Operation::Stop).unwrap();
        assert_eq!(
            registry.begin("aa", Operation::Uninstall).err(),
            Some(Operation::Stop)
        );
        assert!(registry.begin("bb", Operation::Start).is_ok());
        drop(stop);
        assert!(registry.begin("aa", Operation::Uninstall).is_ok());
        assert!(registry.lock().is_empty(), "entries go with their guards");
    }

    #[tokio::test]
    async fn an_install_does_not_start_while_its_app_is_uninstalled() {
        let registry = Registry::default();
        let busy = registry.begin("aa", Operation::Uninstall).unwrap();
        assert!(!registry.start_install("aa", |_, _| Some(tokio::spawn(async {}))));
        drop(busy);
        // The guard of the AppInstall that queued it may still be up.
        let _install = registry.begin("aa", Operation::Install).unwrap();
        assert!(registry.start_install("aa", |_, _| Some(tokio::spawn(async {}))));
        assert!(registry.progress("aa").is_some());
        let install = registry.take_install("aa").unwrap();
        install.task.await.unwrap();
        assert!(registry.take_install("aa").is_none());
    }
}
