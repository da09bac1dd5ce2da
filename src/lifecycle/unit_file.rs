//! The unit file of an app: `appunitd supervise <app_id>` as a notify service in the
//! app's slice, started at boot unless the app was stopped.

use super::InstallError;
use crate::app::plan::AppPlan;
use crate::app::slice_name;
use crate::config::Config;
use std::path::Path;

pub(super) fn unit_file(
    config: &Config,
    config_path: &Path,
    app_id: &str,
    trademark: &str,
    plan: &AppPlan,
) -> Result<String, InstallError> {
    let exe = std::env::current_exe().map_err(InstallError::Exe)?;
    let config_file = std::path::absolute(config_path).map_err(|source| InstallError::Io {
        path: config_path.to_path_buf(),
        source,
    })?;
    // Enough for every health check to use its start period and all its retries.
    let start_ms: u64 = plan
        .services
        .iter()
        .filter_map(|s| s.health.as_ref())
        .map(|h| h.start_period_ms + (h.interval_ms + h.timeout_ms) * (u64::from(h.retries) + 1))
        .sum();
    let stop_ms: u64 = plan.services.iter().map(|s| s.stop_grace_ms + 10_000).sum();
    Ok(format!(
        "# Written by appunitd; changes are overwritten.\n\
         [Unit]\n\
         Description=appunit app {app_id} ({trademark})\n\
         Wants=containerd.service network-online.target\n\
         After=containerd.service network-online.target\n\
         StartLimitIntervalSec=300\n\
         StartLimitBurst=3\n\
         \n\
         [Service]\n\
         Type=notify\n\
         NotifyAccess=main\n\
         ExecStart={exe} --config {config} supervise {app_id}\n\
         Slice={slice}\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         TimeoutStartSec={start}\n\
         TimeoutStopSec={stop}\n\
         \n\
         [Install]\n\
         WantedBy={target}\n",
        target = config.unit_target,
        exe = exe.display(),
        config = config_file.display(),
        slice = slice_name(app_id),
        start = (start_ms / 1000 + 120),
        stop = (stop_ms / 1000 + 10),
    ))
}
