//! What runs inside an app's unit (`appunit-supervisor <app_id>`, `Type=notify`): it
//! starts the app's containers in dependency order in one network namespace, relays
//! their output to the journal tagged with the service name, runs the health checks,
//! reports READY=1 once they pass, and stops the containers gracefully on SIGTERM.
//! When a container exits, its `restart` policy says what happens: `always` and
//! `unless-stopped` start it again after a backoff, `on-failure[:N]` after a non-zero
//! status (at most N times); else the supervisor stops the others and exits non-zero,
//! so the unit's Restart= policy and the app's error status apply; its reason is the
//! unit's status text. A service that another needs with `service_completed_successfully`
//! runs once per start: its exit with status 0 is its success.
//! A containerd restart is no exit: the supervisor reconnects and waits on its tasks again.

mod health;
mod output;
mod tasks;

pub use tasks::Exit;

use crate::app::plan::{AppPlan, ServicePlan};
use crate::app::{AppFolder, redact};
use crate::catalog::compose::{Condition, Restart};
use crate::config::Config;
use crate::error::error_chain;
use crate::runtime::containerd::{Containerd, ContainerdError};
use crate::runtime::net::NetError;
use health::{Health, HealthChecker};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

/// The unit's status text while every service runs; a failure replaces it with the
/// reason at once, before the others are stopped.
pub const RUNNING: &str = "running";

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("handling SIGTERM: {0}")]
    Signal(#[source] std::io::Error),
    #[error("{}: {source}", path.display())]
    ReadPlan {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    ParsePlan {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    #[error(transparent)]
    Network(#[from] NetError),
    #[error("checking the network namespace: {0}")]
    NetworkCheck(#[source] tokio::task::JoinError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting {service}: {source}")]
    Start {
        service: String,
        source: ContainerdError,
    },
    #[error("health check of {service} failed: {reason}")]
    Unhealthy { service: String, reason: String },
    #[error("service {service} {exit} before it was healthy")]
    EndedBeforeHealthy {
        service: String,
        #[source]
        exit: Exit,
    },
    #[error("service {service} {exit}")]
    Ended {
        service: String,
        #[source]
        exit: Exit,
    },
    #[error("service {service} {exit}; {dependant} needs it to complete successfully")]
    NotCompleted {
        service: String,
        dependant: String,
        #[source]
        exit: Exit,
    },
}

/// A restarted service waits this long, doubling per restart up to `LONGEST_BACKOFF`;
/// one that ran `STEADY` starts over from the first pause, as Docker's restart policy.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const LONGEST_BACKOFF: Duration = Duration::from_secs(10);
const STEADY: Duration = Duration::from_secs(10);

/// What a service's exit leads to.
enum AfterExit {
    /// The app goes on (the service is done, or runs again).
    Continue,
    Stopped,
    Failed(SupervisorError),
}

/// How the start of an app's containers ended.
enum StartEnded {
    /// Every service runs and is healthy.
    Ready,
    /// SIGTERM came first.
    Stopped,
    Failed(SupervisorError),
}

struct Supervisor {
    containerd: Containerd,
    plan: AppPlan,
    io_dir: PathBuf,
    /// Per service: how its task ended, once it has.
    exits: HashMap<String, watch::Receiver<Option<Exit>>>,
    /// Per service: its task's PID, to signal while containerd cannot be reached.
    pids: HashMap<String, u32>,
    health: HashMap<String, watch::Receiver<Health>>,
    /// Per service: when its container last started.
    started: HashMap<String, Instant>,
    /// Per service: restarts since it last ran steadily.
    restarts: HashMap<String, u32>,
    /// Services that run once per start: another needs them to complete successfully.
    run_once: HashSet<String>,
    /// Services whose exit needs nothing more (one-shots done, `on-failure` with 0).
    done: HashSet<String>,
}

/// The supervisor's process: `appunit-supervisor --config <file> <app_id>`.
pub fn main(config_path: &Path, app_id: &str) -> Result<(), String> {
    if !crate::actions::is_valid_app_id(app_id) {
        return Err(format!("{app_id:?} is not an app id"));
    }
    let config = Config::load(config_path).map_err(|e| e.to_string())?;
    // One arena: a supervisor's few threads (the runtime's, a blocking one for the
    // network check) would each get one and keep its pages, in every app.
    crate::malloc::limit_arenas(1);
    // One thread: a supervisor waits on a few streams. Worker threads (one per core)
    // would cost every app their stacks and malloc arenas, and their start.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting tokio: {e}"))?;
    runtime.block_on(supervise(&config, app_id))
}

/// Runs the app until SIGTERM (Ok) or until it fails: a service that exits, a failed
/// start, or containerd gone for good. The error is the reason, secrets masked.
pub async fn supervise(config: &Config, app_id: &str) -> Result<(), String> {
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| error_chain(&SupervisorError::Signal(e)))?;
    let mut supervisor = Supervisor::prepare(config, app_id)
        .await
        .map_err(|e| error_chain(&e))?;
    let secrets = supervisor.plan.secrets.clone();
    run(&mut supervisor, &mut terminate, app_id)
        .await
        .map_err(|e| redact(&error_chain(&e), &secrets))
}

async fn run(
    supervisor: &mut Supervisor,
    terminate: &mut Signal,
    app_id: &str,
) -> Result<(), SupervisorError> {
    match supervisor.start_all(terminate).await {
        StartEnded::Ready => {}
        StartEnded::Stopped => {
            supervisor.stop_all().await;
            return Ok(());
        }
        StartEnded::Failed(error) => {
            notify_status(&error, &supervisor.plan.secrets);
            supervisor.stop_all().await;
            return Err(error);
        }
    }
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(RUNNING),
    ]);
    tracing::info!(app_id, "all services are up");

    let outcome = loop {
        let after = tokio::select! {
            _ = terminate.recv() => AfterExit::Stopped,
            (service, exit) = supervisor.first_exit() => supervisor.after_exit(&service, exit, terminate).await,
        };
        match after {
            AfterExit::Continue => {}
            AfterExit::Stopped => break Ok(()),
            AfterExit::Failed(error) => break Err(error),
        }
    };
    if let Err(error) = &outcome {
        notify_status(error, &supervisor.plan.secrets);
    }
    supervisor.stop_all().await;
    outcome
}

/// The reason goes to the journal and to the unit's status text, which every local
/// user can read: no secret of the app's is in it.
fn notify_status(error: &SupervisorError, secrets: &[String]) {
    let reason = redact(&error_chain(error), secrets);
    tracing::error!("{reason}");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&reason)]);
}

impl Supervisor {
    async fn prepare(config: &Config, app_id: &str) -> Result<Supervisor, SupervisorError> {
        let path = AppFolder::new(&config.state_dir, app_id).plan_file();
        let bytes = std::fs::read(&path).map_err(|source| SupervisorError::ReadPlan {
            path: path.clone(),
            source,
        })?;
        let plan: AppPlan = serde_json::from_slice(&bytes)
            .map_err(|source| SupervisorError::ParsePlan { path, source })?;
        // The network namespace check runs `ip` (and at a first start the CNI plugins):
        // it overlaps the connection to containerd instead of adding to the start.
        let network = config.network();
        let (id, ports) = (app_id.to_string(), plan.ports.clone());
        let ensured = tokio::task::spawn_blocking(move || network.ensure(&id, &ports));
        let containerd =
            Containerd::connect(&config.containerd_socket, &config.containerd_namespace).await;
        ensured.await.map_err(SupervisorError::NetworkCheck)??;
        let containerd = containerd?;
        let io_dir = config.app_run_dir(app_id);
        std::fs::create_dir_all(&io_dir).map_err(|source| SupervisorError::Io {
            path: io_dir.clone(),
            source,
        })?;
        let run_once = plan
            .services
            .iter()
            .flat_map(|s| &s.depends_on)
            .filter(|(_, condition)| **condition == Condition::ServiceCompletedSuccessfully)
            .map(|(name, _)| name.clone())
            .collect();
        Ok(Supervisor {
            containerd,
            plan,
            io_dir,
            exits: HashMap::new(),
            pids: HashMap::new(),
            health: HashMap::new(),
            started: HashMap::new(),
            restarts: HashMap::new(),
            run_once,
            done: HashSet::new(),
        })
    }

    /// Each service once those it depends on are up (healthy, where it says so); then
    /// until every service with a health check is healthy. SIGTERM ends the waits, never
    /// a service's start: containerd cancels a call whose client leaves, and a task
    /// create or start cut short would outlive the supervisor (a create cut short also
    /// leaves the shim's bundle, failing every later create: "file exists"). A SIGTERM
    /// that comes during a start is taken at the next wait.
    async fn start_all(&mut self, terminate: &mut Signal) -> StartEnded {
        for service in self.plan.services.clone() {
            for (dependency, condition) in &service.depends_on {
                let ended = match condition {
                    Condition::ServiceStarted => None,
                    Condition::ServiceHealthy => {
                        self.until_healthy_or_stopped(dependency, terminate).await
                    }
                    Condition::ServiceCompletedSuccessfully => {
                        self.until_completed_or_stopped(dependency, &service.name, terminate)
                            .await
                    }
                };
                if let Some(ended) = ended {
                    return ended;
                }
            }
            if let Err(error) = self.start(&service).await {
                return StartEnded::Failed(error);
            }
        }
        let checked: Vec<String> = self
            .health
            .keys()
            .filter(|s| !self.run_once.contains(*s))
            .cloned()
            .collect();
        for service in checked {
            if let Some(ended) = self.until_healthy_or_stopped(&service, terminate).await {
                return ended;
            }
        }
        StartEnded::Ready
    }

    /// None once the service is healthy; else how the start ends.
    async fn until_healthy_or_stopped(
        &self,
        service: &str,
        terminate: &mut Signal,
    ) -> Option<StartEnded> {
        tokio::select! {
            healthy = self.until_healthy(service) => healthy.err().map(StartEnded::Failed),
            _ = terminate.recv() => Some(StartEnded::Stopped),
        }
    }

    async fn until_healthy(&self, service: &str) -> Result<(), SupervisorError> {
        let Some(health) = self.health.get(service) else {
            return Ok(()); // no health check: started is healthy
        };
        let mut health = health.clone();
        let mut exited = self.exits[service].clone();
        tokio::select! {
            state = health.wait_for(|h| *h != Health::Starting) => match state.map(|h| h.clone()) {
                Ok(Health::Unhealthy(reason)) => Err(SupervisorError::Unhealthy {
                    service: service.to_string(),
                    reason,
                }),
                _ => Ok(()),
            },
            exit = exited.wait_for(Option::is_some) => Err(SupervisorError::EndedBeforeHealthy {
                service: service.to_string(),
                exit: exit.ok().and_then(|exit| exit.clone()).unwrap_or(Exit::Gone),
            }),
        }
    }

    /// None once the one-shot `service` exited with status 0; else how the start ends.
    async fn until_completed_or_stopped(
        &mut self,
        service: &str,
        dependant: &str,
        terminate: &mut Signal,
    ) -> Option<StartEnded> {
        let mut exited = self.exits[service].clone();
        let exit = tokio::select! {
            exit = exited.wait_for(Option::is_some) => exit.ok().and_then(|e| e.clone()).unwrap_or(Exit::Gone),
            _ = terminate.recv() => return Some(StartEnded::Stopped),
        };
        if matches!(exit, Exit::Status(0)) {
            tracing::info!(service, "completed successfully");
            self.done.insert(service.to_string());
            return None;
        }
        Some(StartEnded::Failed(SupervisorError::NotCompleted {
            service: service.to_string(),
            dependant: dependant.to_string(),
            exit,
        }))
    }

    /// The service's restart policy applied to its exit.
    async fn after_exit(&mut self, name: &str, exit: Exit, terminate: &mut Signal) -> AfterExit {
        let Some(service) = self.plan.services.iter().find(|s| s.name == name).cloned() else {
            return AfterExit::Continue;
        };
        let status = match exit {
            Exit::Status(status) => Some(status),
            _ => None,
        };
        let ended = || SupervisorError::Ended {
            service: name.to_string(),
            exit: exit.clone(),
        };
        if self.run_once.contains(name) && status == Some(0) {
            self.done.insert(name.to_string());
            return AfterExit::Continue;
        }
        // containerd gone for a minute: no restart can help.
        if matches!(exit, Exit::Unwatched(_)) {
            return AfterExit::Failed(ended());
        }
        let restarts = self.restarts.get(name).copied().unwrap_or(0);
        let again = match service.restart {
            Restart::No => false,
            Restart::Always | Restart::UnlessStopped => true,
            Restart::OnFailure(_) if status == Some(0) => {
                tracing::info!(service = name, "exited with status 0: not restarted");
                self.done.insert(name.to_string());
                return AfterExit::Continue;
            }
            Restart::OnFailure(limit) => limit.is_none_or(|limit| restarts < limit),
        };
        if !again {
            return AfterExit::Failed(ended());
        }
        let ran_steadily = self
            .started
            .get(name)
            .is_some_and(|started| started.elapsed() >= STEADY);
        let restarts = if ran_steadily { 0 } else { restarts };
        let pause = (FIRST_BACKOFF * 2u32.saturating_pow(restarts)).min(LONGEST_BACKOFF);
        tracing::warn!(service = name, %exit, ?pause, "restarting it (restart: {:?})", service.restart);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = terminate.recv() => return AfterExit::Stopped,
        }
        self.restarts.insert(name.to_string(), restarts + 1);
        match self.start(&service).await {
            Ok(()) => AfterExit::Continue,
            Err(error) => AfterExit::Failed(error),
        }
    }

    /// Starts a service's container, or takes it back when it runs already (the
    /// supervisor restarted; its containers did not); then watches it.
    async fn start(&mut self, service: &ServicePlan) -> Result<(), SupervisorError> {
        let id = &service.container_id;
        let fail = |source| SupervisorError::Start {
            service: service.name.clone(),
            source,
        };
        let (out, err) = (
            self.io_dir.join(format!("{}.out", service.name)),
            self.io_dir.join(format!("{}.err", service.name)),
        );
        let pid = match self.containerd.task(id).await.map_err(fail)? {
            Some(task) if task.running => {
                tracing::info!(
                    service = service.name,
                    "re-attaching to the running container"
                );
                for fifo in [&out, &err] {
                    output::make_fifo(fifo, false)?;
                }
                output::relay(&service.name, &out, &err)?;
                task.pid
            }
            // A task that ended stays until deleted, and refuses the create.
            Some(_) => {
                self.containerd.delete_task(id).await.map_err(fail)?;
                self.create_started(service, &out, &err).await?
            }
            None => self.create_started(service, &out, &err).await?,
        };
        self.watch(service, pid);
        Ok(())
    }

    /// A new task for the service, its output relayed, started: its PID.
    async fn create_started(
        &self,
        service: &ServicePlan,
        out: &Path,
        err: &Path,
    ) -> Result<u32, SupervisorError> {
        let id = &service.container_id;
        let fail = |source| SupervisorError::Start {
            service: service.name.clone(),
            source,
        };
        for fifo in [out, err] {
            output::make_fifo(fifo, true)?;
        }
        output::relay(&service.name, out, err)?;
        let pid = tasks::create(&self.containerd, id, out, err)
            .await
            .map_err(fail)?;
        self.containerd.start_task(id).await.map_err(fail)?;
        Ok(pid)
    }

    /// Follows a started service: its exit, and its health while it has none yet.
    fn watch(&mut self, service: &ServicePlan, pid: u32) {
        self.pids.insert(service.name.clone(), pid);
        self.started.insert(service.name.clone(), Instant::now());
        let (exit_sender, exit_receiver) = watch::channel(None);
        let containerd = self.containerd.clone();
        let id = service.container_id.clone();
        tokio::spawn(async move {
            let exit = tasks::wait_exit(&containerd, &id).await;
            let _ = exit_sender.send(Some(exit));
        });
        self.exits.insert(service.name.clone(), exit_receiver);
        if let Some(health) = &service.health {
            let (sender, receiver) = watch::channel(Health::Starting);
            let checker = HealthChecker {
                containerd: self.containerd.clone(),
                service: service.clone(),
                plan: health.clone(),
            };
            tokio::spawn(checker.run(sender));
            self.health.insert(service.name.clone(), receiver);
        }
    }

    /// The first service whose task ends, and how (of those whose exit matters).
    async fn first_exit(&self) -> (String, Exit) {
        let waits: Vec<_> = self
            .exits
            .iter()
            .filter(|(service, _)| !self.done.contains(*service))
            .map(|(service, exited)| {
                let mut exited = exited.clone();
                let service = service.clone();
                Box::pin(async move {
                    let exit = exited.wait_for(Option::is_some).await;
                    let exit = exit.ok().and_then(|exit| exit.clone());
                    (service, exit.unwrap_or(Exit::Gone))
                })
            })
            .collect();
        if waits.is_empty() {
            // Every service has done what it had to: the app runs until stopped.
            return std::future::pending().await;
        }
        futures_util::future::select_all(waits).await.0
    }

    /// Stops every started container, last started first: its stop signal, then
    /// SIGKILL after the grace period; then its task is deleted. While containerd is
    /// down the signals go to the processes, and their tasks stay for the next start.
    async fn stop_all(&self) {
        for service in self.plan.services.iter().rev() {
            let Some(exited) = self.exits.get(&service.name) else {
                continue;
            };
            let (id, pid) = (&service.container_id, self.pids[&service.name]);
            if exited.borrow().is_none() {
                tasks::signal(&self.containerd, id, pid, service.stop_signal).await;
                let grace = Duration::from_millis(service.stop_grace_ms);
                if tokio::time::timeout(grace, ended(exited, pid))
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        service = service.name,
                        "still running after {grace:?}: SIGKILL"
                    );
                    tasks::signal(
                        &self.containerd,
                        id,
                        pid,
                        nix::sys::signal::Signal::SIGKILL as i32,
                    )
                    .await;
                    let _ = tokio::time::timeout(Duration::from_secs(10), ended(exited, pid)).await;
                }
            }
            let deleted =
                tokio::time::timeout(tasks::CALL_TIMEOUT, self.containerd.delete_task(id));
            match deleted.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!(service = service.name, %err, "deleting the task"),
                Err(_) => tracing::warn!(service = service.name, "deleting the task: no answer"),
            }
        }
    }
}

/// Resolves once the task has exited: as containerd reports it, or, while containerd
/// cannot tell, once its process is gone.
async fn ended(exited: &watch::Receiver<Option<Exit>>, pid: u32) {
    let (mut exited, mut reported) = (exited.clone(), exited.clone());
    let gone = async {
        tasks::process_gone(pid).await;
        // A reachable containerd reports the exit at once: delete the task after that.
        let reported = reported.wait_for(Option::is_some);
        let _ = tokio::time::timeout(Duration::from_secs(1), reported).await;
    };
    tokio::select! {
        _ = exited.wait_for(Option::is_some) => {}
        _ = gone => {}
    }
}
