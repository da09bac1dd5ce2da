//! systemd over D-Bus: app unit files, their jobs (start/stop/restart, waiting for the
//! outcome), enablement at boot, and unit state, kept current by systemd's signals.

use futures_util::StreamExt;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zbus::OwnedObjectPath;
use zbus::proxy::CacheProperties;
use zbus_systemd::systemd1::{ManagerProxy, ServiceProxy, SliceProxy, UnitProxy};

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("systemd's bus is not reachable: {0}")]
    Unreachable(String),
    #[error("systemd {call} {unit}: {cause}")]
    Call {
        call: &'static str,
        unit: String,
        cause: String,
    },
    #[error("{unit}: the {job} job ended with \"{result}\"")]
    Job {
        unit: String,
        job: &'static str,
        result: String,
    },
    #[error("writing {path}: {cause}")]
    UnitFile { path: PathBuf, cause: String },
}

type Result<T> = std::result::Result<T, SystemdError>;

/// Every controller runc's systemd driver asks for on a container's scope (I/O too): a
/// controller the slice lacks is enabled up the tree at each start and dropped at each
/// stop, which on cgroup v1 cost about 50 ms of every AppStart (BENCHMARKS.md).
const SLICE_ACCOUNTING: &str = "# Written by appunitd: what AppStatus's usage reads, and what containers' scopes ask for.\n[Slice]\nCPUAccounting=yes\nMemoryAccounting=yes\nTasksAccounting=yes\nIOAccounting=yes\n";

/// Loads br_netfilter, which keeps apps apart (runtime/net.rs), once per boot: every
/// app unit wants it. The supervisor may not load modules; this is the one command
/// with full privileges. As each app unit's ExecStartPre it cost every start a fork of
/// systemd and a process to wait for.
pub const NETFILTER_UNIT: &str = "appunit-netfilter.service";
const NETFILTER: &str = "# Written by appunitd: app units want it (br_netfilter keeps apps apart).\n\
[Unit]\nDescription=appunit: load br_netfilter for the apps' bridge\n\
[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=-/sbin/modprobe -q br_netfilter\n";

/// A unit's ActiveState.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitState {
    Active,
    Reloading,
    Inactive,
    Failed,
    Activating,
    Deactivating,
}

impl UnitState {
    fn in_transition(self) -> bool {
        matches!(
            self,
            UnitState::Activating | UnitState::Deactivating | UnitState::Reloading
        )
    }

    fn parse(text: &str) -> UnitState {
        match text {
            "active" => UnitState::Active,
            "reloading" => UnitState::Reloading,
            "failed" => UnitState::Failed,
            "activating" => UnitState::Activating,
            "deactivating" => UnitState::Deactivating,
            // "inactive", and "maintenance" or whatever a newer systemd adds.
            _ => UnitState::Inactive,
        }
    }
}

/// The unit an object path of systemd's names: `/org/freedesktop/systemd1/unit/` and
/// the name with every byte outside `[A-Za-z0-9]` written as `_xx` (hex).
fn unit_of_path(path: &str) -> Option<String> {
    let escaped = path.strip_prefix("/org/freedesktop/systemd1/unit/")?;
    let mut name = Vec::with_capacity(escaped.len());
    let mut bytes = escaped.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'_' {
            let hex = [bytes.next()?, bytes.next()?];
            name.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            name.push(byte);
        }
    }
    String::from_utf8(name).ok()
}

/// AppStatusInfo's `usage`: an app's slice, as systemd accounts for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub memory_bytes: u64,
    pub cpu_usec: u64,
    pub tasks: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitStatus {
    pub state: UnitState,
    /// Failed, and waiting for its Restart= to start it again.
    pub auto_restart: bool,
    /// What the main process last said (sd_notify STATUS=): the supervisor's reason.
    pub status_text: String,
}

#[derive(Debug, Clone, Copy)]
enum Job {
    Start,
    Stop,
    Restart,
}

impl Job {
    fn name(self) -> &'static str {
        match self {
            Job::Start => "start",
            Job::Stop => "stop",
            Job::Restart => "restart",
        }
    }
}

pub struct Systemd {
    manager: ManagerProxy<'static>,
    connection: zbus::Connection,
    unit_dir: PathBuf,
    /// Units' object paths, asked of systemd once. Their properties are read when
    /// needed, not cached: a proxy caching a unit's 300 properties cost the daemon
    /// 0.5 MB an app, and the state model reads a unit only when it changed.
    paths: Mutex<HashMap<String, OwnedObjectPath>>,
    /// Reads in flight at once: dbus-daemon refuses a connection more than 128 pending
    /// replies, and the state model may read every unit at once (100 apps after a boot).
    reads: tokio::sync::Semaphore,
    /// Boot links changed on disk and systemd has not reloaded since; a reload follows
    /// once jobs stop coming (see `reload_after_job`).
    links: Arc<LinkReload>,
}

/// A reload after (en|dis)abling holds systemd's one thread for 100–200 ms, more with
/// many units, and a job queued behind it waits: AppStart right after AppStop took
/// 170 ms longer. So the reload waits until no job came for `RELOAD_QUIET`, and a burst
/// of installs or starts gets one reload, not one each.
#[derive(Default)]
struct LinkReload {
    changed: AtomicBool,
    scheduled: AtomicBool,
    last_job: Mutex<Option<Instant>>,
}

const RELOAD_QUIET: Duration = Duration::from_secs(2);
const READS_AT_ONCE: usize = 32;

impl LinkReload {
    fn job_began(&self) {
        *self.last_job.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// How long until `RELOAD_QUIET` has passed since the last job; zero once it has.
    fn quiet_in(&self) -> Duration {
        let last = *self.last_job.lock().unwrap_or_else(|p| p.into_inner());
        last.map_or(Duration::ZERO, |last| {
            RELOAD_QUIET.saturating_sub(last.elapsed())
        })
    }
}

impl Systemd {
    /// Connects to `address`, or to the system bus when None, and subscribes to
    /// systemd's signals (it sends none to a client that has not subscribed).
    pub async fn connect(address: Option<&str>, unit_dir: PathBuf) -> Result<Systemd> {
        let unreachable = |e: zbus::Error| SystemdError::Unreachable(e.to_string());
        let connection = match address {
            Some(address) => zbus::connection::Builder::address(address)
                .build()
                .await
                .map_err(unreachable)?,
            None => zbus::Connection::system().await.map_err(unreachable)?,
        };
        let manager = ManagerProxy::new(&connection).await.map_err(unreachable)?;
        manager.subscribe().await.map_err(unreachable)?;
        Ok(Systemd {
            manager,
            connection,
            unit_dir,
            paths: Mutex::default(),
            reads: tokio::sync::Semaphore::new(READS_AT_ONCE),
            links: Arc::default(),
        })
    }

    /// The names of units whose state systemd reports changed, as it reports them (the
    /// PropertiesChanged signals of their Unit interface): a unit stopped by hand shows.
    pub async fn unit_changes(
        &self,
    ) -> Result<impl futures_util::Stream<Item = String> + Send + use<>> {
        let unreachable = |e: zbus::Error| SystemdError::Unreachable(e.to_string());
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.freedesktop.DBus.Properties")
            .member("PropertiesChanged")
            .path_namespace("/org/freedesktop/systemd1/unit")
            .add_arg("org.freedesktop.systemd1.Unit")
            .build()
            .map_err(unreachable)?;
        let messages = zbus::MessageStream::for_match_rule(rule, &self.connection, None)
            .await
            .map_err(unreachable)?;
        Ok(messages.filter_map(|message| async move {
            let message = message.ok()?;
            let header = message.header();
            unit_of_path(header.path()?.as_str())
        }))
    }

    /// Writes a unit file (atomically: readers never see half of it). systemd loads a
    /// unit it does not hold from disk when first asked for it, so only a unit it holds
    /// (an upgrade's, say) needs the reload, which with 100 apps held its one thread for
    /// 100 ms and more: a hundred installs spent seconds in them.
    pub async fn install_unit(&self, unit: &str, content: &str) -> Result<()> {
        self.write_shared_units()?;
        let path = self.unit_dir.join(unit);
        let staging = self.unit_dir.join(format!(".{unit}.new"));
        // Readable by all, as systemd wants it: the daemon's umask (0077) made it
        // 0600, and systemd logged a warning at every load of it.
        let written = std::fs::write(&staging, content)
            .and_then(|()| {
                std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o644))
            })
            .and_then(|()| std::fs::rename(&staging, &path));
        written.map_err(|e| SystemdError::UnitFile {
            path,
            cause: e.to_string(),
        })?;
        if self.holds(unit).await {
            self.reload(unit).await?;
        }
        Ok(())
    }

    /// Whether systemd holds the unit in memory (loaded, or remembered as not found);
    /// when the bus cannot tell, it does.
    async fn holds(&self, unit: &str) -> bool {
        match self.manager.get_unit(unit.to_string()).await {
            Err(zbus::Error::MethodError(name, _, _)) => {
                name.as_str() != "org.freedesktop.systemd1.NoSuchUnit"
            }
            _ => true,
        }
    }

    /// What every app's units share, written before the reload that loads an app's
    /// units: accounting for every app's slice (`appunit-<id>.slice`, by systemd's
    /// drop-ins for a name prefix), which `usage` reads (without CPUAccounting systemd
    /// has no CPU time, on cgroup v1 not even a cgroup to count it in); and
    /// `NETFILTER_UNIT`.
    fn write_shared_units(&self) -> Result<()> {
        let folder = self.unit_dir.join("appunit-.slice.d");
        write_if_changed(&folder, &folder.join("accounting.conf"), SLICE_ACCOUNTING)?;
        write_if_changed(
            &self.unit_dir,
            &self.unit_dir.join(NETFILTER_UNIT),
            NETFILTER,
        )
    }

    /// Stops and disables a unit, removes its file and forgets it. A unit that was
    /// never written is fine.
    pub async fn remove_unit(&self, unit: &str) -> Result<()> {
        if self.state(unit).await? != UnitState::Inactive {
            self.stop(unit).await?;
        }
        let path = self.unit_dir.join(unit);
        if path.exists() {
            self.disable(unit).await?;
            std::fs::remove_file(&path).map_err(|e| SystemdError::UnitFile {
                path,
                cause: e.to_string(),
            })?;
        }
        // A failed unit stays loaded until its failure is reset, a pinned one until
        // it is let go.
        let _ = self.manager.reset_failed_unit(unit.to_string()).await;
        let pinned = self
            .paths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(unit);
        if pinned.is_some() {
            let _ = self.manager.unref_unit(unit.to_string()).await;
        }
        self.reload(unit).await
    }

    pub async fn start(&self, unit: &str) -> Result<()> {
        self.run_job(unit, Job::Start).await
    }

    pub async fn stop(&self, unit: &str) -> Result<()> {
        self.run_job(unit, Job::Stop).await
    }

    pub async fn restart(&self, unit: &str) -> Result<()> {
        self.run_job(unit, Job::Restart).await
    }

    /// The unit starts at boot: a link in `<target>.wants/` for each `WantedBy=` of its
    /// [Install] section, as `systemctl enable` makes it. Made here, not by systemd's
    /// EnableUnitFiles: that call re-reads every unit file and took 140–270 ms of
    /// systemd's one thread on each AppStart. Boot reads the links from disk; systemd's
    /// memory has them after the next job (`reload_after_job`).
    pub async fn enable(&self, unit: &str) -> Result<()> {
        let path = self.unit_dir.join(unit);
        let text = std::fs::read_to_string(&path).map_err(|e| SystemdError::UnitFile {
            path,
            cause: e.to_string(),
        })?;
        for target in wanted_by(&text) {
            let wants = self.unit_dir.join(format!("{target}.wants"));
            let link = wants.join(unit);
            // Relative, as systemctl writes it: right wherever the folder is mounted.
            let linked = std::fs::create_dir_all(&wants)
                .and_then(|()| std::os::unix::fs::symlink(Path::new("..").join(unit), &link));
            match linked {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(SystemdError::UnitFile {
                        path: link,
                        cause: e.to_string(),
                    });
                }
                _ => {}
            }
        }
        self.links.changed.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The unit no longer starts at boot: every `.wants/` or `.requires/` link named
    /// after it goes, as with `systemctl disable`; a reload follows the next job.
    pub async fn disable(&self, unit: &str) -> Result<()> {
        let folders = match std::fs::read_dir(&self.unit_dir) {
            Ok(folders) => folders,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(SystemdError::UnitFile {
                    path: self.unit_dir.clone(),
                    cause: e.to_string(),
                });
            }
        };
        for folder in folders.flatten() {
            let name = folder.file_name();
            let name = name.to_string_lossy();
            if !(name.ends_with(".wants") || name.ends_with(".requires")) {
                continue;
            }
            let link = folder.path().join(unit);
            match std::fs::remove_file(&link) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(SystemdError::UnitFile {
                        path: link,
                        cause: e.to_string(),
                    });
                }
                _ => {}
            }
        }
        self.links.changed.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The unit's ActiveState now. An unknown unit is inactive.
    pub async fn state(&self, unit: &str) -> Result<UnitState> {
        let _read = self.reads.acquire().await;
        self.active_state(unit).await
    }

    async fn active_state(&self, unit: &str) -> Result<UnitState> {
        let proxy = self.unit(unit).await?;
        let state = proxy
            .active_state()
            .await
            .map_err(call_error("ActiveState", unit))?;
        Ok(UnitState::parse(&state))
    }

    /// The unit's state with what explains it: whether it waits to be restarted after
    /// a failure, and the status text its main process last sent.
    pub async fn status(&self, unit: &str) -> Result<UnitStatus> {
        let _read = self.reads.acquire().await;
        let (proxy, service) = (self.unit(unit).await?, self.service(unit).await?);
        // Asked at once: one round trip to systemd, not three, on every answer that
        // follows a job.
        let (state, sub_state, status_text) = tokio::try_join!(
            async {
                proxy
                    .active_state()
                    .await
                    .map_err(call_error("ActiveState", unit))
            },
            async {
                proxy
                    .sub_state()
                    .await
                    .map_err(call_error("SubState", unit))
            },
            async {
                service
                    .status_text()
                    .await
                    .map_err(call_error("StatusText", unit))
            },
        )?;
        Ok(UnitStatus {
            state: UnitState::parse(&state),
            auto_restart: sub_state == "auto-restart",
            status_text,
        })
    }

    /// What a slice and everything in it use now, from systemd's cgroup accounting;
    /// a figure systemd does not have (its accounting is off) is 0.
    pub async fn slice_usage(&self, slice: &str) -> Result<Usage> {
        let _read = self.reads.acquire().await;
        let proxy = SliceProxy::builder(&self.connection)
            .path(self.object_path(slice, false).await?)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(call_error("LoadUnit", slice))?;
        let (memory, cpu_nsec, tasks) = tokio::try_join!(
            proxy.memory_current(),
            proxy.cpu_usage_n_sec(),
            proxy.tasks_current()
        )
        .map_err(call_error("Usage", slice))?;
        let known = |value: u64| if value == u64::MAX { 0 } else { value };
        Ok(Usage {
            memory_bytes: known(memory),
            cpu_usec: known(cpu_nsec) / 1000,
            tasks: known(tasks),
        })
    }

    /// The PID of the unit's main process, 0 when it has none.
    pub async fn main_pid(&self, unit: &str) -> Result<u32> {
        let _read = self.reads.acquire().await;
        self.service(unit)
            .await?
            .main_pid()
            .await
            .map_err(call_error("MainPID", unit))
    }

    async fn service(&self, unit: &str) -> Result<ServiceProxy<'static>> {
        ServiceProxy::builder(&self.connection)
            .path(self.path(unit).await?)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(call_error("LoadUnit", unit))
    }

    async fn unit(&self, unit: &str) -> Result<UnitProxy<'static>> {
        UnitProxy::builder(&self.connection)
            .path(self.path(unit).await?)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(call_error("LoadUnit", unit))
    }

    /// The unit's object path, asked once, and the unit pinned in systemd's memory for
    /// as long as this connection lives. An unpinned unit that is stopped is unloaded at
    /// once, and each later read of it parsed its file again and announced it anew
    /// (PropertiesChanged): the state model read it on that signal, which loaded it
    /// again. After an AppStop that loop held systemd's one thread for 300 ms, and an
    /// AppStart right after queued behind it; a pinned unit is also started without
    /// parsing its file.
    async fn path(&self, unit: &str) -> Result<OwnedObjectPath> {
        self.object_path(unit, true).await
    }

    /// A unit's object path, asked once; the unit pinned when `pin` (a slice is not:
    /// it is read only while its app runs, and it would outlive its app).
    async fn object_path(&self, unit: &str, pin: bool) -> Result<OwnedObjectPath> {
        if let Some(path) = self
            .paths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(unit)
        {
            return Ok(path.clone());
        }
        let path = retried(|| self.manager.load_unit(unit.to_string()))
            .await
            .map_err(call_error("LoadUnit", unit))?;
        // A unit without a file yet cannot be pinned (NoSuchUnit): it is asked again
        // next time, until it can.
        if pin
            && retried(|| self.manager.ref_unit(unit.to_string()))
                .await
                .is_err()
        {
            return Ok(path);
        }
        self.paths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(unit.to_string(), path.clone());
        Ok(path)
    }

    async fn reload(&self, unit: &str) -> Result<()> {
        self.links.changed.store(false, Ordering::Relaxed);
        retried(|| self.manager.reload())
            .await
            .map_err(call_error("Reload", unit))
    }

    /// Queues a job and waits until systemd reports it done; any other result
    /// ("failed", "timeout", "dependency", …) is an error naming it.
    async fn run_job(&self, unit: &str, job: Job) -> Result<()> {
        self.links.job_began();
        // Listen before queueing, or a fast job could end before we look.
        let mut removed = self
            .manager
            .receive_job_removed()
            .await
            .map_err(call_error("JobRemoved", unit))?;
        let (name, mode) = (unit.to_string(), "replace".to_string());
        let queued = retried(|| {
            let (name, mode) = (name.clone(), mode.clone());
            async move {
                match job {
                    Job::Start => self.manager.start_unit(name, mode).await,
                    Job::Stop => self.manager.stop_unit(name, mode).await,
                    Job::Restart => self.manager.restart_unit(name, mode).await,
                }
            }
        })
        .await
        .map_err(call_error(job.name(), unit))?;
        while let Some(signal) = removed.next().await {
            let Ok(args) = signal.args() else { continue };
            if *args.job() == queued {
                return match args.result().as_str() {
                    "done" => {
                        self.settle(unit).await;
                        self.reload_after_job();
                        Ok(())
                    }
                    result => Err(SystemdError::Job {
                        unit: unit.to_string(),
                        job: job.name(),
                        result: result.to_string(),
                    }),
                };
            }
        }
        Err(SystemdError::Unreachable(format!(
            "the bus closed while {unit} was {}ing",
            job.name()
        )))
    }

    /// Brings (en|dis)abled boot links into systemd's memory, as `systemctl enable`
    /// does, in the background once jobs stop coming: nothing at hand depends on it
    /// (boot reads the links from disk), and a reload delays every job behind it.
    fn reload_after_job(&self) {
        if !self.links.changed.load(Ordering::Relaxed)
            || self.links.scheduled.swap(true, Ordering::Relaxed)
        {
            return;
        }
        let (manager, links) = (self.manager.clone(), self.links.clone());
        tokio::spawn(async move {
            loop {
                let wait = links.quiet_in();
                if wait.is_zero() {
                    break;
                }
                tokio::time::sleep(wait).await;
            }
            links.scheduled.store(false, Ordering::Relaxed);
            // An install's reload may have brought them in meanwhile.
            if links.changed.swap(false, Ordering::Relaxed)
                && let Err(error) = retried(|| manager.reload()).await
            {
                tracing::warn!(%error, "reloading systemd after (en|dis)abling units");
            }
        });
    }

    /// Waits (briefly) until the unit's ActiveState leaves a transition. systemd sends
    /// JobRemoved before the unit's PropertiesChanged: a status read right after a job
    /// could still see "deactivating" otherwise. It waits for that signal, not a poll
    /// interval (the answer's latency). Usually it has left it already: one read, and
    /// no subscription (two more round trips) on the answer's path.
    async fn settle(&self, unit: &str) {
        if !matches!(self.state(unit).await, Ok(state) if state.in_transition()) {
            return;
        }
        let Ok(path) = self.path(unit).await else {
            return;
        };
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.freedesktop.DBus.Properties")
            .member("PropertiesChanged")
            .path(path)
            .add_arg("org.freedesktop.systemd1.Unit")
            .build();
        let Ok(rule) = rule else {
            return;
        };
        // Listening before the first look, so no change falls between the two.
        let Ok(mut changes) =
            zbus::MessageStream::for_match_rule(rule, &self.connection, None).await
        else {
            return;
        };
        let settled = async {
            loop {
                if !matches!(self.state(unit).await, Ok(state) if state.in_transition()) {
                    return;
                }
                if changes.next().await.is_none() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), settled).await;
    }
}

/// Writes `text` to `path` in `folder` (made if missing) unless it holds it already;
/// readable by all, as systemd wants unit files.
fn write_if_changed(folder: &Path, path: &Path, text: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    std::fs::create_dir_all(folder)
        .and_then(|()| std::fs::write(path, text))
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)))
        .map_err(|e| SystemdError::UnitFile {
            path: path.to_path_buf(),
            cause: e.to_string(),
        })
}

/// The units named by `WantedBy=` in a unit file's [Install] section.
fn wanted_by(unit_file: &str) -> Vec<String> {
    let mut section = "";
    let mut targets = Vec::new();
    for line in unit_file.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[Install]"
            && let Some(names) = line.strip_prefix("WantedBy=")
        {
            targets.extend(names.split_whitespace().map(str::to_string));
        }
    }
    targets
}

/// systemd drops the calls in flight when it re-executes (`daemon-reexec`) and answers
/// none until it is back: such calls are tried again for up to 5 s.
async fn retried<T, Call: Future<Output = zbus::Result<T>>>(
    mut call: impl FnMut() -> Call,
) -> zbus::Result<T> {
    let mut tries = 0;
    loop {
        match call().await {
            Err(error) if tries < 20 && is_interrupted(&error) => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            outcome => return outcome,
        }
    }
}

fn is_interrupted(error: &zbus::Error) -> bool {
    use zbus::fdo::Error as Fdo;
    matches!(error, zbus::Error::FDO(fdo) if matches!(
        **fdo,
        Fdo::NoReply(_) | Fdo::Disconnected(_) | Fdo::ServiceUnknown(_)
    ))
}

fn call_error(call: &'static str, unit: &str) -> impl Fn(zbus::Error) -> SystemdError {
    let unit = unit.to_string();
    move |error| SystemdError::Call {
        call,
        unit: unit.clone(),
        cause: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_by_reads_the_install_section_only() {
        let unit = "[Unit]\nWantedBy=not-here.target\n[Service]\nExecStart=/bin/true\n\
                    [Install]\nWantedBy=a.target b.target\nWantedBy=c.target\n";
        assert_eq!(wanted_by(unit), ["a.target", "b.target", "c.target"]);
        assert!(wanted_by("[Service]\nExecStart=/bin/true\n").is_empty());
    }

    #[test]
    fn unit_names_come_back_from_object_paths() {
        assert_eq!(
            unit_of_path("/org/freedesktop/systemd1/unit/appunit_2dblog_2eservice").as_deref(),
            Some("appunit-blog.service")
        );
        assert_eq!(unit_of_path("/org/freedesktop/systemd1/unit/bad_2"), None);
        assert_eq!(unit_of_path("/org/freedesktop/systemd1"), None);
    }
}
