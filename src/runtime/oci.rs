//! OCI runtime specs for app containers: the image's settings, the compose service's
//! overrides, on containerd 1.6's default spec (`ctr oci spec`: capabilities, masked
//! and read-only paths, mounts, rlimits, no new privileges) with Docker's default
//! seccomp filter.

use super::seccomp;
use crate::catalog::compose::Limits;
use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxCpu, LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType,
    LinuxMemory, LinuxNamespace, LinuxNamespaceType, LinuxPids, LinuxResources, Mount, PosixRlimit,
    PosixRlimitBuilder, PosixRlimitType, Process, Root, Spec,
};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// containerd's default capability set (what `ctr run` grants).
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The run settings of an image config (`config` in the OCI image config).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    #[serde(default, deserialize_with = "null_as_default")]
    pub env: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub entrypoint: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub cmd: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub working_dir: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub user: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub stop_signal: String,
}

/// Image configs write `null` for absent values ("Entrypoint": null).
pub fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    Ok(<Option<T> as serde::Deserialize>::deserialize(deserializer)?.unwrap_or_default())
}

/// A host path made visible in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// A tmpfs in the container, with mount options (`size=…`, `mode=…`, `exec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tmpfs {
    pub target: PathBuf,
    pub options: Vec<String>,
}

/// A host device node given to the container (compose `devices`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    pub path: PathBuf,
    pub kind: LinuxDeviceType,
    pub major: i64,
    pub minor: i64,
    pub file_mode: u32,
    pub permissions: String,
}

impl DeviceNode {
    /// The host's device at `host`, seen at `container` in the container.
    pub fn of(host: &Path, container: &Path, permissions: &str) -> Result<DeviceNode, String> {
        use nix::sys::stat::{SFlag, major, minor, stat};
        let st = stat(host).map_err(|e| format!("device {}: {e}", host.display()))?;
        let kind = match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFCHR => LinuxDeviceType::C,
            SFlag::S_IFBLK => LinuxDeviceType::B,
            _ => return Err(format!("{} is not a device", host.display())),
        };
        Ok(DeviceNode {
            path: container.to_path_buf(),
            kind,
            major: major(st.st_rdev) as i64,
            minor: minor(st.st_rdev) as i64,
            file_mode: st.st_mode & 0o7777,
            permissions: permissions.to_string(),
        })
    }
}

/// What a container runs, once the compose service is rendered.
#[derive(Debug, Clone, Default)]
pub struct RunSettings {
    pub hostname: String,
    pub domainname: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub environment: Vec<(String, String)>,
    pub user: Option<String>,
    /// The image's accounts, read when the user names one.
    pub accounts: Option<Accounts>,
    pub working_dir: Option<String>,
    pub binds: Vec<Bind>,
    pub tmpfs: Vec<Tmpfs>,
    /// The root file system read-only (compose `read_only`).
    pub read_only: bool,
    /// Resource limits of the process: kind, soft, hard.
    pub ulimits: Vec<(PosixRlimitType, u64, u64)>,
    /// Namespaced sysctls only (compose checks).
    pub sysctls: Vec<(String, String)>,
    /// The container's cgroup limits, inside the app's slice.
    pub limits: Limits,
    /// The app's shared network namespace (a path under /run/netns).
    pub netns: PathBuf,
    /// Host access: the host's network, PID or IPC namespace instead of the container's.
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    /// `cgroup: host`: the host's cgroup namespace.
    pub host_cgroup: bool,
    /// runc's systemd cgroup driver form: `slice:prefix:name`.
    pub cgroups_path: String,
    pub security: Security,
}

/// What a service may change of the default confinement (compose's `cap_add`,
/// `cap_drop`, `security_opt`, `shm_size`, `privileged` and `devices`).
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub cap_add: Vec<Capability>,
    pub cap_drop: Vec<Capability>,
    /// `cap_add: [ALL]` and `cap_drop: [ALL]`.
    pub add_all_caps: bool,
    pub drop_all_caps: bool,
    /// `security_opt: [apparmor=…]` (runc skips it where AppArmor is off).
    pub apparmor: Option<String>,
    /// Host access: every capability, no seccomp filter, every device, /sys writable.
    pub privileged: bool,
    pub devices: Vec<DeviceNode>,
    /// `security_opt: [no-new-privileges:false]`: setuid programs may raise privileges.
    pub new_privileges: bool,
    /// `security_opt: [seccomp=unconfined]`.
    pub seccomp_unconfined: bool,
    /// /dev/shm's size in bytes (containerd's and Docker's default: 64 MiB).
    pub shm_size: Option<u64>,
}

/// containerd's /dev/shm and /dev sizes.
const DEFAULT_SHM_SIZE: &str = "size=65536k";

/// containerd's RLIMIT_NOFILE (soft and hard).
const DEFAULT_NOFILE: u64 = 1024;

/// The process of a container: compose `entrypoint` replaces the image's entrypoint
/// and drops its Cmd; compose `command` replaces the Cmd.
pub fn process_args(image: &ImageConfig, run: &RunSettings) -> Vec<String> {
    match (&run.entrypoint, &run.command) {
        (Some(entrypoint), command) => {
            let mut args = entrypoint.clone();
            args.extend(command.iter().flatten().cloned());
            args
        }
        (None, command) => {
            let mut args = image.entrypoint.clone();
            args.extend(command.as_ref().unwrap_or(&image.cmd).iter().cloned());
            args
        }
    }
}

/// The image's environment, overridden by the service's, with a PATH always set.
pub fn environment(image: &ImageConfig, run: &RunSettings) -> Vec<String> {
    let mut env: Vec<String> = image.env.clone();
    for (name, value) in &run.environment {
        env.retain(|entry| entry.split_once('=').map_or(entry.as_str(), |(n, _)| n) != name);
        env.push(format!("{name}={value}"));
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.into());
    }
    env
}

/// An image's /etc/passwd and /etc/group, which user and group names resolve in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    pub passwd: String,
    pub group: String,
}

impl Accounts {
    /// The numeric fields of `name`'s line in an /etc/passwd or /etc/group text.
    fn find(text: &str, name: &str) -> Option<Vec<u32>> {
        text.lines()
            .map(|line| line.split(':').collect::<Vec<_>>())
            .find(|fields| fields.first() == Some(&name))
            .map(|fields| {
                fields
                    .iter()
                    .skip(2)
                    .map_while(|f| f.parse().ok())
                    .collect()
            })
    }
}

/// Whether `user` (`user[:group]`) names an account, which needs the image's files.
pub fn names_an_account(user: &str) -> bool {
    user.split(':')
        .any(|part| !part.is_empty() && part != "root" && part.parse::<u32>().is_err())
}

/// `user[:group]`, each numeric, `root`, or a name in the image's `accounts`. A named
/// user without a group runs with its primary group, a numeric one with its own id.
pub fn parse_user(user: &str, accounts: Option<&Accounts>) -> Result<(u32, u32), String> {
    let (user_part, group_part) = user.split_once(':').unwrap_or((user, ""));
    let missing = |file: &str| format!("user {user:?}: not in the image's {file}");
    let (uid, primary_gid) = match user_part {
        "" | "root" => (0, None),
        name => match name.parse::<u32>() {
            Ok(uid) => (uid, None),
            Err(_) => {
                let fields = accounts
                    .and_then(|a| Accounts::find(&a.passwd, name))
                    .ok_or_else(|| missing("/etc/passwd"))?;
                match fields.as_slice() {
                    [uid, gid, ..] => (*uid, Some(*gid)),
                    _ => return Err(missing("/etc/passwd")),
                }
            }
        },
    };
    let gid = match group_part {
        "" => primary_gid.unwrap_or(uid),
        "root" => 0,
        name => match name.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => accounts
                .and_then(|a| Accounts::find(&a.group, name))
                .and_then(|fields| fields.first().copied())
                .ok_or_else(|| missing("/etc/group"))?,
        },
    };
    Ok((uid, gid))
}

/// The host's resolv.conf, unless it only names systemd-resolved's local stub, which
/// containers cannot reach from their network namespace: then the upstream servers
/// that systemd-resolved keeps, as Docker does.
pub fn resolv_conf() -> PathBuf {
    const HOST: &str = "/etc/resolv.conf";
    const UPSTREAM: &str = "/run/systemd/resolve/resolv.conf";
    let text = std::fs::read_to_string(HOST).unwrap_or_default();
    if only_resolved_stub(&text) && Path::new(UPSTREAM).exists() {
        UPSTREAM.into()
    } else {
        HOST.into()
    }
}

fn only_resolved_stub(resolv_conf: &str) -> bool {
    let mut servers = resolv_conf
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .map(str::trim)
        .peekable();
    servers.peek().is_some() && servers.all(|server| server == "127.0.0.53")
}

/// containerd's default mounts, with /sys/fs/cgroup read-only (in the container's own
/// cgroup namespace) as Docker and the CRI plugin give it. Like the CRI plugin and
/// nerdctl, and unlike `ctr`, no tmpfs on /run: images from Docker Hub keep files
/// there (/run/mysqld, /run/postgresql, …) that a tmpfs would hide.
fn default_mounts(shm_size: Option<u64>) -> Vec<Mount> {
    let shm = shm_size.map_or_else(|| DEFAULT_SHM_SIZE.to_string(), |b| format!("size={b}"));
    let mount = |destination: &str, typ: &str, source: &str, options: &[&str]| {
        let mut mount = Mount::default();
        mount
            .set_destination(destination.into())
            .set_typ(Some(typ.into()))
            .set_source(Some(source.into()))
            .set_options(Some(options.iter().map(|o| o.to_string()).collect()));
        mount
    };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", DEFAULT_SHM_SIZE],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &shm],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ]
}

/// Paths of /proc and /sys that containers must not read, as containerd masks them.
const MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

/// And those they may read but not write.
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Every capability, in the kernel's numbering (bit N of a capability set).
const ALL_CAPABILITIES: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// `privileged` and `cap_add: [ALL]`: every capability this host can grant, as Docker
/// gives them (runc fails on one the kernel lacks). The host's bounding set is its init's:
/// appunit's own units run with a narrower one, and containerd starts containers, not them.
fn host_capabilities() -> HashSet<Capability> {
    let status = std::fs::read_to_string("/proc/1/status").unwrap_or_default();
    let bounding = status
        .lines()
        .find_map(|line| line.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    ALL_CAPABILITIES
        .into_iter()
        .enumerate()
        .filter(|(bit, _)| bounding & (1 << bit) != 0)
        .map(|(_, cap)| cap)
        .collect()
}

/// The default set with the service's additions and removals (Docker applies the
/// drops first, so `cap_drop: [ALL]` with `cap_add` keeps what is added).
fn capabilities(security: &Security) -> HashSet<Capability> {
    if security.privileged || security.add_all_caps {
        return host_capabilities();
    }
    let base: &[Capability] = if security.drop_all_caps {
        &[]
    } else {
        &DEFAULT_CAPABILITIES
    };
    base.iter()
        .copied()
        .filter(|cap| !security.cap_drop.contains(cap))
        .chain(security.cap_add.iter().copied())
        .collect()
}

/// A tmpfs as Docker mounts `--tmpfs`: no setuid, device or program files unless the
/// options say `exec`.
fn tmpfs_mount(tmpfs: &Tmpfs) -> Mount {
    let mut options: Vec<String> = ["nosuid", "nodev", "noexec"].map(String::from).to_vec();
    options.extend(tmpfs.options.iter().cloned());
    let mut mount = Mount::default();
    mount
        .set_destination(tmpfs.target.clone())
        .set_typ(Some("tmpfs".into()))
        .set_source(Some("tmpfs".into()))
        .set_options(Some(options));
    mount
}

/// The container's cgroup limits (runc's systemd driver sets them on its scope).
fn resources(run: &RunSettings) -> Result<LinuxResources, String> {
    let security = &run.security;
    // Deny devices by default, as containerd does; runc allows the standard ones
    // (/dev/null, /dev/zero, …) on top. Privileged: every device.
    let mut rules = Vec::new();
    let mut deny = LinuxDeviceCgroup::default();
    deny.set_allow(security.privileged)
        .set_access(Some("rwm".into()));
    rules.push(deny);
    for device in &security.devices {
        let mut allow = LinuxDeviceCgroup::default();
        allow
            .set_allow(true)
            .set_typ(Some(device.kind))
            .set_major(Some(device.major))
            .set_minor(Some(device.minor))
            .set_access(Some(device.permissions.clone()));
        rules.push(allow);
    }
    let mut resources = LinuxResources::default();
    resources.set_devices(Some(rules));
    let limits = &run.limits;
    if limits.memory.is_some() || limits.memory_swap.is_some() {
        let mut memory = LinuxMemory::default();
        memory
            .set_limit(limits.memory.map(|m| m as i64))
            .set_swap(limits.memory_swap);
        resources.set_memory(Some(memory));
    }
    if limits.cpus.is_some() || limits.cpu_shares.is_some() {
        const PERIOD: u64 = 100_000;
        let mut cpu = LinuxCpu::default();
        cpu.set_shares(limits.cpu_shares)
            .set_quota(limits.cpus.map(|c| (c * PERIOD as f64) as i64))
            .set_period(limits.cpus.map(|_| PERIOD));
        resources.set_cpu(Some(cpu));
    }
    if let Some(pids) = limits.pids {
        let mut limit = LinuxPids::default();
        limit.set_limit(pids);
        resources.set_pids(Some(limit));
    }
    Ok(resources)
}

/// A host path in the container: never a way to run setuid programs or reach device
/// nodes that a container planted there (CVE-2021-41091's class).
fn bind_mount(bind: &Bind) -> Mount {
    let mode = if bind.read_only { "ro" } else { "rw" };
    let mut mount = Mount::default();
    mount
        .set_destination(bind.target.clone())
        .set_typ(Some("bind".into()))
        .set_source(Some(bind.source.clone()))
        .set_options(Some(
            ["rbind", "rprivate", "nosuid", "nodev", mode]
                .map(String::from)
                .to_vec(),
        ));
    mount
}

pub fn runtime_spec(image: &ImageConfig, run: &RunSettings) -> Result<Spec, String> {
    let args = process_args(image, run);
    if args.is_empty() {
        return Err("neither the image nor the service says what to run".into());
    }
    let user = run.user.as_deref().unwrap_or(&image.user);
    let (uid, gid) = parse_user(user, run.accounts.as_ref())?;
    let cwd = run
        .working_dir
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| Some(image.working_dir.clone()).filter(|d| !d.is_empty()))
        .unwrap_or_else(|| "/".into());
    let security = &run.security;

    let capabilities = capabilities(security);
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(capabilities.clone()))
        .set_effective(Some(capabilities.clone()))
        .set_permitted(Some(capabilities.clone()))
        .set_inheritable(None)
        .set_ambient(None);
    let mut rlimits: Vec<PosixRlimit> = Vec::new();
    let mut ulimits = run.ulimits.clone();
    if !ulimits
        .iter()
        .any(|(kind, ..)| *kind == PosixRlimitType::RlimitNofile)
    {
        ulimits.insert(
            0,
            (
                PosixRlimitType::RlimitNofile,
                DEFAULT_NOFILE,
                DEFAULT_NOFILE,
            ),
        );
    }
    for (kind, soft, hard) in ulimits {
        rlimits.push(
            PosixRlimitBuilder::default()
                .typ(kind)
                .soft(soft)
                .hard(hard)
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    let mut process = Process::default();
    process
        .set_args(Some(args))
        .set_env(Some(environment(image, run)))
        .set_cwd(cwd.into())
        .set_capabilities(Some(caps))
        .set_rlimits(Some(rlimits))
        .set_no_new_privileges(Some(!security.new_privileges))
        .set_apparmor_profile(security.apparmor.clone().filter(|p| p != "unconfined"))
        .set_terminal(Some(false));
    process.user_mut().set_uid(uid).set_gid(gid);

    let mut mounts = default_mounts(security.shm_size);
    if security.privileged {
        // As Docker's: /sys and the cgroup tree writable.
        for mount in &mut mounts {
            if let Some(options) = mount.options().clone() {
                mount.set_options(Some(options.into_iter().filter(|o| o != "ro").collect()));
            }
        }
    }
    for bind in &run.binds {
        mounts.retain(|m| m.destination() != &bind.target);
        mounts.push(bind_mount(bind));
    }
    for tmpfs in &run.tmpfs {
        mounts.retain(|m| m.destination() != &tmpfs.target);
        mounts.push(tmpfs_mount(tmpfs));
    }

    let namespace = |typ, path: Option<PathBuf>| {
        let mut namespace = LinuxNamespace::default();
        namespace.set_typ(typ).set_path(path);
        namespace
    };
    // containerd's namespaces, the app's shared network, and a cgroup namespace for
    // the read-only /sys/fs/cgroup.
    // Host access leaves out the namespace the service shares with the host.
    let mut namespaces = vec![namespace(LinuxNamespaceType::Uts, None)];
    if !run.host_pid {
        namespaces.push(namespace(LinuxNamespaceType::Pid, None));
    }
    if !run.host_ipc {
        namespaces.push(namespace(LinuxNamespaceType::Ipc, None));
    }
    namespaces.push(namespace(LinuxNamespaceType::Mount, None));
    if !run.host_network {
        namespaces.push(namespace(
            LinuxNamespaceType::Network,
            Some(run.netns.clone()),
        ));
    }
    if !run.host_cgroup {
        namespaces.push(namespace(LinuxNamespaceType::Cgroup, None));
    }
    let devices: Vec<LinuxDevice> = security
        .devices
        .iter()
        .map(|device| {
            let mut node = LinuxDevice::default();
            node.set_path(device.path.clone())
                .set_typ(device.kind)
                .set_major(device.major)
                .set_minor(device.minor)
                .set_file_mode(Some(device.file_mode));
            node
        })
        .collect();
    let sysctls: HashMap<String, String> = run.sysctls.iter().cloned().collect();

    let mut spec = Spec::default();
    let mut root = Root::default();
    root.set_path("rootfs".into())
        .set_readonly(Some(run.read_only));
    spec.set_hostname(Some(run.hostname.clone()))
        .set_domainname(run.domainname.clone())
        .set_root(Some(root))
        .set_process(Some(process))
        .set_mounts(Some(mounts));
    if let Some(linux) = spec.linux_mut() {
        linux
            .set_namespaces(Some(namespaces))
            .set_cgroups_path(Some(run.cgroups_path.clone().into()))
            .set_resources(Some(resources(run)?))
            .set_devices((!devices.is_empty()).then_some(devices))
            .set_sysctl((!sysctls.is_empty()).then_some(sysctls))
            .set_masked_paths(
                (!security.privileged).then(|| MASKED_PATHS.map(String::from).to_vec()),
            )
            .set_readonly_paths(
                (!security.privileged).then(|| READONLY_PATHS.map(String::from).to_vec()),
            )
            .set_seccomp(
                (!(security.seccomp_unconfined || security.privileged))
                    .then(|| seccomp::default_filter(&capabilities, &seccomp::Host::this())),
            );
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageConfig {
        ImageConfig {
            env: vec!["PATH=/bin".into(), "MODE=image".into()],
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into()],
            working_dir: "/app".into(),
            user: "1000".into(),
            stop_signal: String::new(),
        }
    }

    #[test]
    fn compose_overrides_follow_compose_rules() {
        let run = RunSettings::default();
        assert_eq!(process_args(&image(), &run), ["/entry", "serve"]);
        let run = RunSettings {
            command: Some(vec!["other".into()]),
            ..RunSettings::default()
        };
        assert_eq!(process_args(&image(), &run), ["/entry", "other"]);
        let run = RunSettings {
            entrypoint: Some(vec!["sh".into()]),
            ..RunSettings::default()
        };
        assert_eq!(process_args(&image(), &run), ["sh"]);
    }

    #[test]
    fn environment_overrides_by_name() {
        let run = RunSettings {
            environment: vec![("MODE".into(), "compose".into())],
            ..RunSettings::default()
        };
        assert_eq!(environment(&image(), &run), ["PATH=/bin", "MODE=compose"]);
        let bare = ImageConfig::default();
        assert_eq!(environment(&bare, &RunSettings::default()), [DEFAULT_PATH]);
    }

    #[test]
    fn users() {
        assert_eq!(parse_user("", None), Ok((0, 0)));
        assert_eq!(parse_user("root", None), Ok((0, 0)));
        assert_eq!(parse_user("472", None), Ok((472, 472)));
        assert_eq!(parse_user("1000:50", None), Ok((1000, 50)));
        assert!(parse_user("node", None).is_err());
        assert!(!names_an_account("1000:root") && names_an_account("node"));

        let accounts = Accounts {
            passwd: "root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1001::/home/node:/bin/sh\n".into(),
            group: "root:x:0:\nnode:x:1001:\nstaff:x:50:node\n".into(),
        };
        let image = Some(&accounts);
        assert_eq!(parse_user("node", image), Ok((1000, 1001)));
        assert_eq!(parse_user("node:staff", image), Ok((1000, 50)));
        assert_eq!(parse_user("1000:node", image), Ok((1000, 1001)));
        assert_eq!(
            parse_user("ghost", image),
            Err("user \"ghost\": not in the image's /etc/passwd".into())
        );
        assert!(parse_user("node:nogroup", image).is_err());
    }

    #[test]
    fn spec_has_the_shared_network_and_the_slice() {
        let run = RunSettings {
            hostname: "web".into(),
            netns: "/run/netns/appunit-blog".into(),
            cgroups_path: "appunit-blog.slice:appunit:blog-web".into(),
            binds: vec![Bind {
                source: "/var/lib/appunit/apps/blog/hosts".into(),
                target: "/etc/hosts".into(),
                read_only: true,
            }],
            ..RunSettings::default()
        };
        let spec = runtime_spec(&image(), &run).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["hostname"], "web");
        assert_eq!(json["process"]["user"]["uid"], 1000);
        assert_eq!(json["process"]["cwd"], "/app");
        assert_eq!(
            json["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
        assert_eq!(
            json["linux"]["cgroupsPath"],
            "appunit-blog.slice:appunit:blog-web"
        );
        let namespaces = json["linux"]["namespaces"].as_array().unwrap();
        assert!(
            namespaces
                .iter()
                .any(|n| n["type"] == "network" && n["path"] == "/run/netns/appunit-blog")
        );
        let mounts = json["mounts"].as_array().unwrap();
        let hosts = mounts
            .iter()
            .find(|m| m["destination"] == "/etc/hosts")
            .unwrap();
        assert_eq!(
            hosts["options"],
            serde_json::json!(["rbind", "rprivate", "nosuid", "nodev", "ro"])
        );
    }

    #[test]
    fn resolved_stub_is_recognised() {
        assert!(only_resolved_stub(
            "# systemd-resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n"
        ));
        assert!(!only_resolved_stub(
            "nameserver 127.0.0.53\nnameserver 10.0.0.1\n"
        ));
        assert!(!only_resolved_stub("nameserver 10.255.255.53\n"));
        assert!(!only_resolved_stub(""));
    }

    #[test]
    fn spec_is_containerds_default() {
        let spec = runtime_spec(&image(), &RunSettings::default()).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        let process = &json["process"];
        assert_eq!(process["noNewPrivileges"], true);
        assert_eq!(
            process["rlimits"],
            serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024}])
        );
        let mut bounding: Vec<&str> = process["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        bounding.sort();
        let mut expected = [
            "CAP_AUDIT_WRITE",
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FOWNER",
            "CAP_FSETID",
            "CAP_KILL",
            "CAP_MKNOD",
            "CAP_NET_BIND_SERVICE",
            "CAP_NET_RAW",
            "CAP_SETFCAP",
            "CAP_SETGID",
            "CAP_SETPCAP",
            "CAP_SETUID",
            "CAP_SYS_CHROOT",
        ];
        expected.sort();
        assert_eq!(bounding, expected);
        assert_eq!(
            process["capabilities"]["effective"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
        assert!(process["capabilities"]["inheritable"].is_null());
        let mounts = json["mounts"].as_array().unwrap();
        let shm = mounts
            .iter()
            .find(|m| m["destination"] == "/dev/shm")
            .unwrap();
        assert!(
            shm["options"]
                .as_array()
                .unwrap()
                .contains(&"size=65536k".into())
        );
        let sys = mounts.iter().find(|m| m["destination"] == "/sys").unwrap();
        assert!(sys["options"].as_array().unwrap().contains(&"ro".into()));
        assert!(!mounts.iter().any(|m| m["destination"] == "/run"));
        let linux = &json["linux"];
        assert_eq!(linux["maskedPaths"].as_array().unwrap().len(), 10);
        assert!(
            linux["readonlyPaths"]
                .as_array()
                .unwrap()
                .contains(&"/proc/sys".into())
        );
        assert_eq!(
            linux["resources"]["devices"],
            serde_json::json!([{"allow": false, "access": "rwm"}])
        );
        assert_eq!(linux["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["root"]["readonly"], false);
    }

    #[test]
    fn security_options_change_the_defaults() {
        let run = RunSettings {
            security: Security {
                cap_add: vec![Capability::SysAdmin],
                cap_drop: vec![Capability::NetRaw],
                new_privileges: true,
                shm_size: Some(256 << 20),
                ..Security::default()
            },
            ..RunSettings::default()
        };
        let json = serde_json::to_value(runtime_spec(&image(), &run).unwrap()).unwrap();
        let bounding = json["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert!(bounding.contains(&"CAP_SYS_ADMIN".into()));
        assert!(!bounding.contains(&"CAP_NET_RAW".into()));
        assert_eq!(json["process"]["noNewPrivileges"], false);
        // The filter follows the capabilities: CAP_SYS_ADMIN allows mount.
        let syscalls = json["linux"]["seccomp"]["syscalls"].as_array().unwrap();
        assert!(
            syscalls
                .iter()
                .any(|s| s["names"].as_array().unwrap().contains(&"mount".into()))
        );
        let shm = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/dev/shm")
            .unwrap()
            .clone();
        assert!(
            shm["options"]
                .as_array()
                .unwrap()
                .contains(&"size=268435456".into())
        );

        let run = RunSettings {
            security: Security {
                seccomp_unconfined: true,
                ..Security::default()
            },
            ..RunSettings::default()
        };
        let json = serde_json::to_value(runtime_spec(&image(), &run).unwrap()).unwrap();
        assert!(json["linux"]["seccomp"].is_null());
    }

    #[test]
    fn compose_settings_reach_the_spec() {
        let run = RunSettings {
            domainname: Some("example.org".into()),
            tmpfs: vec![Tmpfs {
                target: "/run".into(),
                options: vec!["size=1048576".into()],
            }],
            read_only: true,
            ulimits: vec![
                (PosixRlimitType::RlimitNofile, 2048, 4096),
                (PosixRlimitType::RlimitNproc, 50, 50),
            ],
            sysctls: vec![("net.core.somaxconn".into(), "1024".into())],
            limits: Limits {
                memory: Some(64 << 20),
                memory_swap: Some(128 << 20),
                cpus: Some(0.5),
                cpu_shares: Some(512),
                pids: Some(40),
            },
            security: Security {
                cap_drop: vec![Capability::Chown],
                drop_all_caps: true,
                cap_add: vec![Capability::NetAdmin],
                ..Security::default()
            },
            ..RunSettings::default()
        };
        let json = serde_json::to_value(runtime_spec(&image(), &run).unwrap()).unwrap();
        assert_eq!(json["domainname"], "example.org");
        assert_eq!(json["root"]["readonly"], true);
        assert_eq!(
            json["process"]["rlimits"],
            serde_json::json!([
                {"type": "RLIMIT_NOFILE", "soft": 2048, "hard": 4096},
                {"type": "RLIMIT_NPROC", "soft": 50, "hard": 50}
            ])
        );
        assert_eq!(
            json["process"]["capabilities"]["bounding"],
            serde_json::json!(["CAP_NET_ADMIN"])
        );
        let tmpfs = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/run")
            .unwrap()
            .clone();
        assert_eq!(tmpfs["type"], "tmpfs");
        assert_eq!(
            tmpfs["options"],
            serde_json::json!(["nosuid", "nodev", "noexec", "size=1048576"])
        );
        let linux = &json["linux"];
        assert_eq!(linux["sysctl"]["net.core.somaxconn"], "1024");
        let resources = &linux["resources"];
        assert_eq!(resources["memory"]["limit"], 64 << 20);
        assert_eq!(resources["memory"]["swap"], 128 << 20);
        assert_eq!(
            (
                resources["cpu"]["quota"].as_i64(),
                resources["cpu"]["period"].as_u64()
            ),
            (Some(50_000), Some(100_000))
        );
        assert_eq!(resources["cpu"]["shares"], 512);
        assert_eq!(resources["pids"]["limit"], 40);
    }

    #[test]
    fn host_access_in_the_spec() {
        let null = DeviceNode::of(Path::new("/dev/null"), Path::new("/dev/mynull"), "rw").unwrap();
        assert_eq!(
            (null.kind, null.major, null.minor),
            (LinuxDeviceType::C, 1, 3)
        );
        assert!(DeviceNode::of(Path::new("/etc/hostname"), Path::new("/x"), "rw").is_err());
        let run = RunSettings {
            host_network: true,
            host_pid: true,
            host_cgroup: true,
            security: Security {
                privileged: true,
                devices: vec![null],
                ..Security::default()
            },
            ..RunSettings::default()
        };
        let json = serde_json::to_value(runtime_spec(&image(), &run).unwrap()).unwrap();
        assert_eq!(
            json["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            host_capabilities().len()
        );
        let linux = &json["linux"];
        assert!(linux["seccomp"].is_null() && linux["maskedPaths"].is_null());
        let namespaces: Vec<&str> = linux["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(
            !namespaces.contains(&"network")
                && !namespaces.contains(&"pid")
                && !namespaces.contains(&"cgroup"),
            "{namespaces:?}"
        );
        assert_eq!(
            linux["resources"]["devices"][0],
            serde_json::json!({"allow": true, "access": "rwm"})
        );
        assert_eq!(linux["devices"][0]["path"], "/dev/mynull");
        let sys = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys")
            .unwrap()
            .clone();
        assert!(!sys["options"].as_array().unwrap().contains(&"ro".into()));
    }
}
