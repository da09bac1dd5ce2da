//! The unit file of an app: `appunit-supervisor <app_id>` as a notify service in the
//! app's slice, started at boot unless the app was stopped.

use super::InstallError;
use crate::app::plan::AppPlan;
use crate::app::slice_name;
use crate::config::Config;
use std::path::{Path, PathBuf};

/// What the supervisor may do, no more (README, "Hardening"). It shares the host's mount
/// namespace: the app's network namespace is a mount under /run/netns that containerd
/// must see, so no option that gives the service a mount namespace of its own
/// (ProtectSystem=, PrivateTmp=, ProtectKernel*=, …) can be used. Its containers run
/// under containerd's shims, outside this service: none of this limits them.
const HARDENING: &str = "\
# The network namespace (mount, setns), CNI and iptables (net admin, raw sockets), and
# signals to a container's processes while containerd is down.
CapabilityBoundingSet=CAP_SYS_ADMIN CAP_NET_ADMIN CAP_NET_RAW CAP_KILL
NoNewPrivileges=yes
SystemCallFilter=@system-service @mount
SystemCallErrorNumber=EPERM
SystemCallArchitectures=native
# containerd (unix), CNI and iptables (netlink; inet for iptables-legacy's sockets).
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
# `ip netns add` and the CNI plugins create and enter network namespaces; `ip -n`
# enters one in a mount namespace of its own, to show it its /sys.
RestrictNamespaces=net mnt
# It talks to containerd and the kernel only; its containers' traffic is not its own.
IPAddressDeny=any
DevicePolicy=closed
ProtectClock=yes
ProtectHostname=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
UMask=0077
";

/// The supervisor's binary, installed beside appunitd.
const SUPERVISOR: &str = "appunit-supervisor";

pub(super) fn unit_file(
    config: &Config,
    config_path: &Path,
    app_id: &str,
    trademark: &str,
    plan: &AppPlan,
) -> Result<String, InstallError> {
    let daemon = installed_path(std::env::current_exe().map_err(InstallError::Exe)?);
    let exe = daemon.with_file_name(SUPERVISOR);
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
         Wants=containerd.service network-online.target {netfilter}\n\
         After=containerd.service network-online.target {netfilter}\n\
         StartLimitIntervalSec=300\n\
         StartLimitBurst=3\n\
         \n\
         [Service]\n\
         Type=notify\n\
         NotifyAccess=main\n\
         ExecStart={exe} --config {config} {app_id}\n\
         Slice={slice}\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         TimeoutStartSec={start}\n\
         TimeoutStopSec={stop}\n\
         {HARDENING}\
         \n\
         [Install]\n\
         WantedBy={target}\n",
        target = config.unit_target,
        netfilter = crate::runtime::systemd::NETFILTER_UNIT,
        exe = exe.display(),
        config = config_file.display(),
        slice = slice_name(app_id),
        start = (start_ms / 1000 + 120),
        stop = (stop_ms / 1000 + 10),
    ))
}

/// The path the running binary was installed at. While a package upgrade replaces it,
/// Linux names the running one `/usr/bin/appunitd (deleted)`; the new binary is at the
/// path without that suffix, and that is what a unit must run.
fn installed_path(exe: PathBuf) -> PathBuf {
    match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(path) => PathBuf::from(path),
        None => exe,
    }
}

#[cfg(test)]
mod tests {
    use super::installed_path;
    use std::path::PathBuf;

    #[test]
    fn a_replaced_binary_is_named_by_its_installed_path() {
        assert_eq!(
            installed_path(PathBuf::from("/usr/bin/appunitd (deleted)")),
            PathBuf::from("/usr/bin/appunitd")
        );
        assert_eq!(
            installed_path(PathBuf::from("/usr/bin/appunitd")),
            PathBuf::from("/usr/bin/appunitd")
        );
        // Only the kernel's suffix goes; a folder that merely mentions it stays.
        assert_eq!(
            installed_path(PathBuf::from("/opt/x (deleted)/appunitd")),
            PathBuf::from("/opt/x (deleted)/appunitd")
        );
    }
}
