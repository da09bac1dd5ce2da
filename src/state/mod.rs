//! The state model: every app's status as AppStatus shows it, in memory. The lifecycle
//! tells it each write of the store (the record as it was then) and systemd's signals for
//! the app units make it read the unit again; AppList, AppStatus and /Events are served
//! from it. An app's JSON is rendered once per language and kept until the app changes.

use crate::app::{slice_name, unit_name};
use crate::error::Code;
use crate::images::progress::ProgressInfo;
use crate::lifecycle::{Status, Truth, UnitManager};
use crate::messages::Language;
use crate::runtime::systemd::{UnitState, Usage};
use crate::store::{AppRecord, Phase, StatusReason};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// systemd's signal can reach us before the unit proxy's cached state moved: after a
/// signal the unit is read again this often, this many times, until it shows a change.
const SETTLE_EVERY: Duration = Duration::from_millis(10);
const SETTLE_TRIES: u32 = 20;
/// How old a running app's `usage` may be when asked for before it is read again.
const USAGE_MAX_AGE: Duration = Duration::from_secs(1);
/// How many changes a slow /Events client may fall behind before it is told it lagged.
const EVENTS_QUEUED: usize = 1024;

/// One app as it is now. Never changed in place: a change puts a new one in the model,
/// so a reader holds a consistent app, and the JSON rendered of it stays true.
pub struct AppState {
    pub record: AppRecord,
    /// None for an installed app whose unit was not read yet.
    pub truth: Option<Truth>,
    /// The slice's, while running.
    pub usage: Option<Usage>,
    usage_read: Instant,
    usage_reading: AtomicBool,
    /// Which unit read `truth` came from: a read that began before it is stale.
    ticket: u64,
    json: [OnceLock<Bytes>; 2],
}

impl AppState {
    fn new(record: AppRecord, truth: Option<Truth>, usage: Option<Usage>, ticket: u64) -> Self {
        AppState {
            record,
            truth,
            usage,
            usage_read: Instant::now(),
            usage_reading: AtomicBool::new(false),
            ticket,
            json: Default::default(),
        }
    }

    pub fn status(&self) -> Option<Status> {
        self.truth.as_ref().map(|truth| truth.status)
    }

    /// The app's JSON in `language`, rendered by `render` the first time it is asked for.
    pub fn json(&self, language: Language, render: impl FnOnce(&AppState) -> Bytes) -> Bytes {
        self.json[slot(language)]
            .get_or_init(|| render(self))
            .clone()
    }

    /// What /Events sends an event for a change of.
    fn event_key(&self) -> Option<(Status, Option<&ProgressInfo>, Option<&str>)> {
        let truth = self.truth.as_ref()?;
        let operation = self.record.operation.as_ref().map(|o| o.kind.as_str());
        Some((truth.status, truth.progress.as_ref(), operation))
    }
}

pub struct Model {
    apps: RwLock<BTreeMap<String, Arc<AppState>>>,
    units: Arc<dyn UnitManager>,
    events: broadcast::Sender<Arc<AppState>>,
    tickets: AtomicU64,
    /// Bumped at every change of `apps`, under its write lock.
    generation: AtomicU64,
    /// AppList's array of every app, per language, and the generation it shows.
    listed: [Mutex<Option<(u64, Bytes)>>; 2],
}

/// Where a language's rendering is kept.
fn slot(language: Language) -> usize {
    match language {
        Language::English => 0,
        Language::Chinese => 1,
    }
}

/// A JSON array of JSON `items`.
pub fn json_array(items: &[Bytes]) -> Bytes {
    let mut array = Vec::with_capacity(items.iter().map(|item| item.len() + 1).sum::<usize>() + 1);
    array.push(b'[');
    for (at, item) in items.iter().enumerate() {
        if at > 0 {
            array.push(b',');
        }
        array.extend_from_slice(item);
    }
    array.push(b']');
    array.into()
}

impl Model {
    /// The model of `records`; installed apps' units are read when first asked for.
    pub fn new(units: Arc<dyn UnitManager>, records: Vec<AppRecord>) -> Model {
        let apps = records
            .into_iter()
            .map(|record| {
                let truth = phase_truth(&record, None);
                (
                    record.app_id.clone(),
                    Arc::new(AppState::new(record, truth, None, 0)),
                )
            })
            .collect();
        Model {
            apps: RwLock::new(apps),
            units,
            events: broadcast::channel(EVENTS_QUEUED).0,
            tickets: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            listed: Default::default(),
        }
    }

    /// Every change an /Events client is told of, from now on, in the order it happened.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AppState>> {
        self.events.subscribe()
    }

    /// The app as it is now, its unit read if it never was.
    pub async fn get(self: &Arc<Self>, app_id: &str) -> Option<Arc<AppState>> {
        let app = self.read().get(app_id).cloned()?;
        let app = self.checked(app).await;
        self.refresh_usage([&app]);
        Some(app)
    }

    /// Every app (or the one named), sorted by id.
    pub async fn list(self: &Arc<Self>, only: Option<&str>) -> Vec<Arc<AppState>> {
        let apps: Vec<Arc<AppState>> = match only {
            Some(app_id) => self.read().get(app_id).cloned().into_iter().collect(),
            None => self.read().values().cloned().collect(),
        };
        let mut checked = Vec::with_capacity(apps.len());
        for app in apps {
            checked.push(self.checked(app).await);
        }
        self.refresh_usage(&checked);
        checked
    }

    /// Every app's JSON in `language` (each rendered by `render` once) as one array,
    /// joined again only after a change. The apps whose status may be stale (running, or
    /// their unit unread) are checked first, as `list` checks them.
    pub async fn list_json(
        self: &Arc<Self>,
        language: Language,
        render: impl Fn(&AppState) -> Bytes,
    ) -> Bytes {
        let unsure: Vec<Arc<AppState>> = self
            .read()
            .values()
            .filter(|app| app.truth.is_none() || app.status() == Some(Status::Running))
            .cloned()
            .collect();
        let mut checked = Vec::with_capacity(unsure.len());
        for app in unsure {
            checked.push(self.checked(app).await);
        }
        self.refresh_usage(&checked);
        let listed = &self.listed[slot(language)];
        let (generation, apps) = {
            let apps = self.read();
            let generation = self.generation.load(Ordering::SeqCst);
            let cached = listed.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, array)) = cached.as_ref().filter(|(at, _)| *at == generation) {
                return array.clone();
            }
            (generation, apps.values().cloned().collect::<Vec<_>>())
        };
        let items: Vec<Bytes> = apps.iter().map(|app| app.json(language, &render)).collect();
        let array = json_array(&items);
        *listed.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, array.clone()));
        array
    }

    /// Reads the unit of every installed app not read yet (at start-up), off any request.
    pub fn read_units(self: &Arc<Self>) {
        let unread: Vec<String> = self
            .read()
            .values()
            .filter(|app| app.truth.is_none())
            .map(|app| app.record.app_id.clone())
            .collect();
        for app_id in unread {
            tokio::spawn(self.clone().read_unit(app_id, false));
        }
    }

    /// The ids of apps whose images are pulling.
    pub fn pulling(&self) -> Vec<String> {
        self.read()
            .values()
            .filter(|app| app.record.phase == Phase::Pulling)
            .map(|app| app.record.app_id.clone())
            .collect()
    }

    /// Whether /Events has been told this install of the app is queued: the queue takes
    /// no app before, or its `00` could be lost to the pull's `10`.
    pub fn shows_queued(&self, app: &AppRecord) -> bool {
        self.read().get(&app.app_id).is_some_and(|shown| {
            shown.record.phase == Phase::Queuing && shown.record.serial == app.serial
        })
    }

    /// The store wrote the app's record (None: removed it). Whether its unit must be
    /// read (it was just installed).
    pub fn set_record(&self, app_id: &str, record: Option<AppRecord>) -> bool {
        let mut apps = self.write();
        let Some(record) = record else {
            if apps.remove(app_id).is_some() {
                self.generation.fetch_add(1, Ordering::SeqCst);
            }
            return false;
        };
        let before = apps.get(app_id);
        // An installed app's unit says its status: a write of its record (an operation
        // beginning, say) leaves what was read of the unit.
        let kept = before.filter(|before| {
            before.record.phase == Phase::Installed
                && record.phase == Phase::Installed
                && before.record.serial == record.serial
        });
        let app = match kept {
            Some(before) => {
                AppState::new(record, before.truth.clone(), before.usage, before.ticket)
            }
            None => {
                // A pull's progress stays until the next look at it.
                let progress = before
                    .filter(|before| before.record.phase == Phase::Pulling)
                    .and_then(|before| before.truth.as_ref()?.progress.clone());
                let truth =
                    phase_truth(&record, progress.filter(|_| record.phase == Phase::Pulling));
                AppState::new(record, truth, None, 0)
            }
        };
        let unread = app.truth.is_none();
        self.put(&mut apps, Arc::new(app));
        unread
    }

    /// The pull's progress of a pulling app.
    pub fn set_progress(&self, app_id: &str, progress: Option<ProgressInfo>) {
        let mut apps = self.write();
        let Some(before) = apps.get(app_id) else {
            return;
        };
        let Some(truth) = before.truth.as_ref() else {
            return;
        };
        if before.record.phase != Phase::Pulling || truth.progress == progress {
            return;
        }
        let truth = Truth {
            progress,
            ..truth.clone()
        };
        let app = AppState::new(before.record.clone(), Some(truth), None, before.ticket);
        self.put(&mut apps, Arc::new(app));
    }

    /// Reads the app's unit (and its usage, if running) into the model. After a signal
    /// (`settle`), reads until the unit shows a change, as the signal may come before
    /// the cached state moved.
    pub async fn read_unit(self: Arc<Self>, app_id: String, settle: bool) {
        let tries = if settle { SETTLE_TRIES } else { 1 };
        for attempt in 0..tries {
            if attempt > 0 {
                tokio::time::sleep(SETTLE_EVERY).await;
            }
            let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
            let truth = self.unit_truth(&app_id).await;
            let usage = match truth.status {
                Status::Running => self.read_usage(&app_id).await,
                _ => None,
            };
            match self.set_unit(&app_id, ticket, truth, usage) {
                Some(false) => continue,
                _ => return,
            }
        }
    }

    /// Puts what was read of the unit with `ticket` into the model, unless a later read
    /// is there already or the app is not installed; whether its status changed.
    fn set_unit(
        &self,
        app_id: &str,
        ticket: u64,
        truth: Truth,
        usage: Option<Usage>,
    ) -> Option<bool> {
        let mut apps = self.write();
        let before = apps.get(app_id)?;
        if before.record.phase != Phase::Installed || before.ticket > ticket {
            return None;
        }
        let changed = before.truth.as_ref() != Some(&truth);
        let app = AppState::new(before.record.clone(), Some(truth), usage, ticket);
        self.put(&mut apps, Arc::new(app));
        Some(changed)
    }

    /// Replaces the app, and tells /Events if what it shows of it changed.
    fn put(&self, apps: &mut BTreeMap<String, Arc<AppState>>, app: Arc<AppState>) {
        let eventful = app.truth.is_some()
            && apps
                .get(&app.record.app_id)
                .map(|before| before.event_key())
                != Some(app.event_key());
        apps.insert(app.record.app_id.clone(), app.clone());
        self.generation.fetch_add(1, Ordering::SeqCst);
        if eventful {
            // No subscriber is no one to tell.
            let _ = self.events.send(app);
        }
    }

    /// The app as it may be served: its unit read if it never was; a running app whose
    /// unit's processes are all gone is `stopping`.
    async fn checked(self: &Arc<Self>, app: Arc<AppState>) -> Arc<AppState> {
        let app_id = &app.record.app_id;
        if app.truth.is_none() {
            self.clone().read_unit(app_id.clone(), false).await;
            return self.read().get(app_id).cloned().unwrap_or(app);
        }
        if app.status() != Some(Status::Running) {
            return app;
        }
        // The truth rule: systemd's signal for a unit stopped by hand may still be on
        // its way when `systemctl stop` has returned, but the kernel emptied the unit's
        // cgroup before systemd could call the unit stopped. So no stale `running` is
        // served: the empty cgroup is seen here, and the signal then says what followed.
        if self.units.populated(&unit_name(app_id)) == Some(false) {
            let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
            self.set_unit(app_id, ticket, Truth::plain(Status::Stopping), None);
            tokio::spawn(self.clone().read_unit(app_id.clone(), true));
            return self.read().get(app_id).cloned().unwrap_or(app);
        }
        app
    }

    /// Reads again, off the request, the usage of those `apps` that run and whose figure
    /// is older than USAGE_MAX_AGE. Usage changes all the time: reading it for every app
    /// of every AppList would be a bus round trip per running app per request. One task
    /// reads them one after another and puts them in together, so that a list of many
    /// running apps is joined again once, not once per app, and the bus is not flooded.
    fn refresh_usage<'a>(self: &Arc<Self>, apps: impl IntoIterator<Item = &'a Arc<AppState>>) {
        let due: Vec<(String, u64)> = apps
            .into_iter()
            .filter(|app| {
                app.status() == Some(Status::Running)
                    && app.usage_read.elapsed() > USAGE_MAX_AGE
                    && !app.usage_reading.swap(true, Ordering::SeqCst)
            })
            .map(|app| (app.record.app_id.clone(), app.ticket))
            .collect();
        if due.is_empty() {
            return;
        }
        let model = self.clone();
        tokio::spawn(async move {
            let mut read = Vec::with_capacity(due.len());
            for (app_id, ticket) in due {
                let usage = model.read_usage(&app_id).await;
                read.push((app_id, ticket, usage));
            }
            let mut apps = model.write();
            for (app_id, ticket, usage) in read {
                if let Some(before) = apps.get(&app_id).filter(|b| b.ticket == ticket) {
                    let app =
                        AppState::new(before.record.clone(), before.truth.clone(), usage, ticket);
                    model.put(&mut apps, Arc::new(app));
                }
            }
        });
    }

    async fn read_usage(&self, app_id: &str) -> Option<Usage> {
        match self.units.slice_usage(&slice_name(app_id)).await {
            Ok(usage) => Some(usage),
            Err(err) => {
                tracing::debug!(app_id, %err, "reading the slice's usage");
                None
            }
        }
    }

    async fn unit_truth(&self, app_id: &str) -> Truth {
        let failed = |detail: String| Truth {
            status: Status::Error,
            reason: Some(StatusReason {
                code: Code::ContainerError,
                detail,
            }),
            progress: None,
        };
        let unit = unit_name(app_id);
        let status = match self.units.status(&unit).await {
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
            // Active with its cgroup emptied: the stop's signal is on its way.
            UnitState::Active | UnitState::Reloading
                if self.units.populated(&unit) == Some(false) =>
            {
                Truth::plain(Status::Stopping)
            }
            UnitState::Active | UnitState::Reloading => Truth::plain(Status::Running),
            UnitState::Deactivating => Truth::plain(Status::Stopping),
            UnitState::Inactive => Truth::plain(Status::Stopped),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<AppState>>> {
        self.apps.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<AppState>>> {
        self.apps.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The status the install pipeline's phase says; None when installed: the unit says.
fn phase_truth(record: &AppRecord, progress: Option<ProgressInfo>) -> Option<Truth> {
    Some(match record.phase {
        Phase::Queuing => Truth::plain(Status::Queuing),
        Phase::Pulling => Truth {
            progress,
            ..Truth::plain(Status::Pulling)
        },
        Phase::Creating => Truth::plain(Status::Creating),
        Phase::Initing => Truth::plain(Status::Initing),
        Phase::Uninstalling => Truth::plain(Status::Uninstalling),
        Phase::Failed => Truth {
            reason: record.reason.clone(),
            ..Truth::plain(Status::Error)
        },
        Phase::Installed => return None,
    })
}
