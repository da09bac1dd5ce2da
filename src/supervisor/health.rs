//! Compose health checks, run as execs in the container until it is healthy.

use crate::app::plan::{HealthPlan, ServicePlan};
use crate::runtime::containerd::Containerd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Health {
    Starting,
    Healthy,
    Unhealthy(String),
}

pub(super) struct HealthChecker {
    pub containerd: Containerd,
    pub service: ServicePlan,
    pub plan: HealthPlan,
}

static EXEC_IDS: AtomicU64 = AtomicU64::new(0);

impl HealthChecker {
    /// Compose semantics: checks every interval; failures inside the start period do not
    /// count; healthy at the first success; unhealthy after `retries` counted failures.
    /// A check containerd could not run (it restarts) is a failed check like any other.
    pub async fn run(self, health: watch::Sender<Health>) {
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
            // Compose: checks come every start_interval while the start period lasts.
            let interval = if started.elapsed() < start_period {
                self.plan.start_interval_ms
            } else {
                self.plan.interval_ms
            };
            tokio::time::sleep(Duration::from_millis(interval)).await;
        }
    }

    async fn check(&self) -> Result<(), String> {
        let mut process = self.service.process.clone();
        process.insert("args".into(), self.plan.args.clone().into());
        let exec_id = format!("health-{}", EXEC_IDS.fetch_add(1, Ordering::Relaxed));
        let timeout = Duration::from_millis(self.plan.timeout_ms);
        let run = self
            .containerd
            .exec(&self.service.container_id, &exec_id, &process);
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(0)) => Ok(()),
            // The check's arguments stay out of the reason: they may hold a password.
            Ok(Ok(status)) => Err(format!("the health check exited with {status}")),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!("the health check took longer than {timeout:?}")),
        }
    }
}
