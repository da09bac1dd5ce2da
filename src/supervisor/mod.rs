//! What runs inside an app's unit (`appunitd supervise <app_id>`, `Type=notify`): it
//! starts the app's containers in dependency order in one network namespace, relays
//! their output to the journal tagged with the service name, runs the health checks,
//! reports READY=1 once they pass, and stops the containers gracefully on SIGTERM.
//! When a container dies it stops the others and exits non-zero, so the unit's
//! Restart= policy and the app's error status apply; its reason is the unit's status text.

use crate::app::AppFolder;
use crate::app::plan::{AppPlan, HealthPlan, ServicePlan};
use crate::catalog::compose::Condition;
use crate::config::Config;
use crate::runtime::containerd::Containerd;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::net::unix::pipe;
use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq)]
enum Health {
    Starting,
    Healthy,
    Unhealthy(String),
}

struct Supervisor {
    containerd: Containerd,
    plan: AppPlan,
    io_dir: PathBuf,
    /// Per service: its exit status once its task has exited.
    exits: HashMap<String, watch::Receiver<Option<u32>>>,
    health: HashMap<String, watch::Receiver<Health>>,
}

pub async fn supervise(config: &Config, app_id: &str) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let plan_file = AppFolder::new(&config.state_dir, app_id).plan_file();
    let plan: AppPlan = std::fs::read(&plan_file)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
        .map_err(|e| format!("{}: {e}", plan_file.display()))?;
    let containerd = Containerd::connect(&config.containerd_socket, &config.containerd_namespace)
        .await
        .map_err(|e| e.to_string())?;
    config
        .network()
        .ensure(app_id, &plan.ports)
        .map_err(|e| e.to_string())?;
    let io_dir = config.app_run_dir(app_id);
    std::fs::create_dir_all(&io_dir).map_err(|e| format!("{}: {e}", io_dir.display()))?;
    let mut supervisor = Supervisor {
        containerd,
        plan,
        io_dir,
        exits: HashMap::new(),
        health: HashMap::new(),
    };

    let started = tokio::select! {
        started = supervisor.start_all() => started,
        _ = terminate.recv() => Err(String::new()),
    };
    if let Err(reason) = started {
        if reason.is_empty() {
            // Told to stop while starting: a clean stop, not a failure.
            supervisor.stop_all().await;
            return Ok(());
        }
        notify_status(&reason);
        supervisor.stop_all().await;
        return Err(reason);
    }
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("running"),
    ]);
    tracing::info!(app_id, "all services are up");

    let outcome = tokio::select! {
        _ = terminate.recv() => Ok(()),
        (service, status) = supervisor.first_exit() => {
            Err(format!("service {service} exited with status {status}"))
        }
    };
    if let Err(reason) = &outcome {
        notify_status(reason);
    }
    supervisor.stop_all().await;
    outcome
}

fn notify_status(reason: &str) {
    tracing::error!("{reason}");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(reason)]);
}

impl Supervisor {
    async fn start_all(&mut self) -> Result<(), String> {
        for service in self.plan.services.clone() {
            for (dependency, condition) in &service.depends_on {
                if *condition == Condition::ServiceHealthy {
                    self.until_healthy(dependency).await?;
                }
            }
            self.start(&service).await?;
        }
        let checked: Vec<String> = self.health.keys().cloned().collect();
        for service in checked {
            self.until_healthy(&service).await?;
        }
        Ok(())
    }

    async fn until_healthy(&self, service: &str) -> Result<(), String> {
        let Some(health) = self.health.get(service) else {
            return Ok(()); // no health check: started is healthy
        };
        let mut health = health.clone();
        let mut exited = self.exits[service].clone();
        tokio::select! {
            state = health.wait_for(|h| *h != Health::Starting) => match state.map(|h| h.clone()) {
                Ok(Health::Unhealthy(reason)) => Err(format!("health check of {service} failed: {reason}")),
                _ => Ok(()),
            },
            status = exited.wait_for(Option::is_some) => {
                let status = status.map(|s| s.unwrap_or_default()).unwrap_or_default();
                Err(format!("service {service} exited with status {status} before it was healthy"))
            }
        }
    }

    async fn start(&mut self, service: &ServicePlan) -> Result<(), String> {
        let id = &service.container_id;
        let fail = |e: crate::runtime::containerd::ContainerdError| {
            format!("starting {}: {e}", service.name)
        };
        let (out, err) = (
            self.io_dir.join(format!("{}.out", service.name)),
            self.io_dir.join(format!("{}.err", service.name)),
        );
        if self.containerd.task_running(id).await.map_err(fail)? {
            // The supervisor restarted; its containers did not: attach to them.
            tracing::info!(
                service = service.name,
                "re-attaching to the running container"
            );
            for fifo in [&out, &err] {
                make_fifo(fifo, false)?;
            }
            self.relay(service, &out, &err)?;
        } else {
            self.containerd.delete_task(id).await.map_err(fail)?;
            for fifo in [&out, &err] {
                make_fifo(fifo, true)?;
            }
            self.relay(service, &out, &err)?;
            self.containerd
                .create_task(id, &out, &err)
                .await
                .map_err(fail)?;
            self.containerd.start_task(id).await.map_err(fail)?;
        }
        let (exit_sender, exit_receiver) = watch::channel(None);
        let containerd = self.containerd.clone();
        let waited_id = id.clone();
        tokio::spawn(async move {
            let status = containerd.wait_task(&waited_id).await.unwrap_or(255);
            let _ = exit_sender.send(Some(status));
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
        Ok(())
    }

    fn relay(&self, service: &ServicePlan, out: &Path, err: &Path) -> Result<(), String> {
        for (path, priority) in [
            (out, libsystemd::logging::Priority::Info),
            (err, libsystemd::logging::Priority::Warning),
        ] {
            let receiver = pipe::OpenOptions::new()
                .read_write(true)
                .open_receiver(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            tokio::spawn(relay_lines(service.name.clone(), receiver, priority));
        }
        Ok(())
    }

    /// The first service whose task exits, and its status.
    async fn first_exit(&self) -> (String, u32) {
        let waits = self.exits.iter().map(|(service, exited)| {
            let mut exited = exited.clone();
            let service = service.clone();
            Box::pin(async move {
                let status = exited
                    .wait_for(Option::is_some)
                    .await
                    .map(|s| s.unwrap_or_default())
                    .unwrap_or_default();
                (service, status)
            })
        });
        futures_util::future::select_all(waits).await.0
    }

    /// Stops every started container, last started first: its stop signal, then
    /// SIGKILL after the grace period; then its task is deleted.
    async fn stop_all(&self) {
        for service in self.plan.services.iter().rev() {
            let Some(exited) = self.exits.get(&service.name) else {
                continue;
            };
            let mut exited = exited.clone();
            let id = &service.container_id;
            if exited.borrow().is_none() {
                let _ = self
                    .containerd
                    .kill_task(id, service.stop_signal as u32)
                    .await;
                let grace = Duration::from_millis(service.stop_grace_ms);
                if tokio::time::timeout(grace, exited.wait_for(Option::is_some))
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        service = service.name,
                        "still running after {grace:?}: SIGKILL"
                    );
                    let _ = self.containerd.kill_task(id, 9).await;
                    let _ = tokio::time::timeout(
                        Duration::from_secs(10),
                        exited.wait_for(Option::is_some),
                    )
                    .await;
                }
            }
            if let Err(err) = self.containerd.delete_task(id).await {
                tracing::warn!(service = service.name, %err, "deleting the task");
            }
        }
    }
}

struct HealthChecker {
    containerd: Containerd,
    service: ServicePlan,
    plan: HealthPlan,
}

static EXEC_IDS: AtomicU64 = AtomicU64::new(0);

impl HealthChecker {
    /// Compose semantics: checks every interval; failures inside the start period do not
    /// count; healthy at the first success; unhealthy after `retries` counted failures.
    async fn run(self, health: watch::Sender<Health>) {
        let started = Instant::now();
        let start_period = Duration::from_millis(self.plan.start_period_ms);
        let mut failures = 0;
        loop {
            match self.check().await {
                Ok(()) => {
                    tracing::info!(service = self.service.name, "healthy");
                    let _ = health.send(Health::Healthy);
                    return;
                }
                Err(reason) if started.elapsed() >= start_period => {
                    failures += 1;
                    tracing::info!(
                        service = self.service.name,
                        failures,
                        "health check failed: {reason}"
                    );
                    if failures >= self.plan.retries.max(1) {
                        let _ = health.send(Health::Unhealthy(reason));
                        return;
                    }
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(self.plan.interval_ms)).await;
        }
    }

    async fn check(&self) -> Result<(), String> {
        let mut process = self.service.process.clone();
        process.set_args(Some(self.plan.args.clone()));
        let exec_id = format!("health-{}", EXEC_IDS.fetch_add(1, Ordering::Relaxed));
        let timeout = Duration::from_millis(self.plan.timeout_ms);
        let run = self
            .containerd
            .exec(&self.service.container_id, &exec_id, &process);
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(0)) => Ok(()),
            Ok(Ok(status)) => Err(format!("{:?} exited with {status}", self.plan.args)),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!("{:?} took longer than {timeout:?}", self.plan.args)),
        }
    }
}

/// A FIFO for a container's output. `fresh` replaces one left from an earlier run;
/// otherwise an existing one is kept, since a running container writes to it.
fn make_fifo(path: &Path, fresh: bool) -> Result<(), String> {
    if path.exists() {
        if !fresh {
            return Ok(());
        }
        std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Each line a container writes, to the journal with the service as its identifier
/// (or to stdout, tagged, when there is no journal).
async fn relay_lines(
    service: String,
    receiver: pipe::Receiver,
    priority: libsystemd::logging::Priority,
) {
    let journal = libsystemd::logging::connected_to_journal();
    let mut reader = tokio::io::BufReader::new(receiver);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        let sent = journal
            && libsystemd::logging::journal_send(
                priority,
                text,
                [
                    ("SYSLOG_IDENTIFIER", service.as_str()),
                    ("APPUNIT_SERVICE", service.as_str()),
                ]
                .into_iter(),
            )
            .is_ok();
        if !sent {
            println!("{service}: {text}");
        }
    }
}
