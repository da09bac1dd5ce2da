//! The default seccomp filter of app containers: Docker's default profile, which
//! containerd's default mirrors, made into the OCI `linux.seccomp` of one container as
//! Docker does it (for the container's capabilities, the host's architecture and
//! kernel).
//!
//! `seccomp.json` is Docker's maintained profile, kept as data: moby's
//! `profiles/seccomp/default.json` of Docker 20.10.24, as Debian 12 ships it in
//! `golang-github-docker-docker-dev` (20.10.24+dfsg1-1+deb12u1), unchanged. Podman's
//! `/usr/share/containers/seccomp.json` (containers-common 0.50) has the same format
//! but allows mount, unshare, setns and namespace-creating clone to every container,
//! leaving them to capabilities; Docker's gates them on CAP_SYS_ADMIN (clone by its
//! flags), which is the filter asked for here. Either file converts with this code.

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSyscall,
};
use serde::Deserialize;
use std::collections::HashSet;

const PROFILE: &str = include_str!("seccomp.json");

/// What a denied syscall gets when the profile names no errno: EPERM, as runc does.
const EPERM: u32 = 1;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: LinuxSeccompAction,
    default_errno_ret: Option<u32>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    syscalls: Vec<Rule>,
}

/// Architectures stay strings until one is picked: the map names some that the OCI
/// types may not know.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    names: Vec<String>,
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "super::oci::null_as_default")]
    args: Vec<LinuxSeccompArg>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

/// Conditions of a rule: capabilities (all of them for `includes`, any for
/// `excludes`), architectures (Go's names: amd64, arm64, …) and a kernel version.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    min_kernel: Option<String>,
}

/// The host a filter is made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Go's name of the architecture, as the profile's rules use it.
    pub arch: &'static str,
    /// The kernel's (major, minor).
    pub kernel: (u32, u32),
}

impl Host {
    pub fn this() -> Host {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        Host {
            arch: go_arch(std::env::consts::ARCH),
            kernel: kernel_version(&release).unwrap_or((0, 0)),
        }
    }
}

fn go_arch(rust_arch: &'static str) -> &'static str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        other => other,
    }
}

/// libseccomp's name of the native architecture, which picks the profile's arch map entry.
fn seccomp_arch(go_arch: &str) -> Option<&'static str> {
    Some(match go_arch {
        "amd64" => "SCMP_ARCH_X86_64",
        "arm64" => "SCMP_ARCH_AARCH64",
        "386" => "SCMP_ARCH_X86",
        "arm" => "SCMP_ARCH_ARM",
        "s390x" => "SCMP_ARCH_S390X",
        "ppc64le" => "SCMP_ARCH_PPC64LE",
        "ppc64" => "SCMP_ARCH_PPC64",
        "riscv64" => "SCMP_ARCH_RISCV64",
        "mips64" => "SCMP_ARCH_MIPS64",
        _ => return None,
    })
}

/// "6.1.0-18-amd64" → (6, 1).
fn kernel_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn capability(name: &str) -> Option<Capability> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

/// Docker's default filter for a container with the capabilities `caps` on `host`.
pub fn default_filter(caps: &HashSet<Capability>, host: &Host) -> LinuxSeccomp {
    let profile: Profile =
        serde_json::from_str(PROFILE).expect("the embedded seccomp profile is valid");
    let has = |name: &String| capability(name).is_some_and(|cap| caps.contains(&cap));
    let kernel_at_least =
        |version: &String| kernel_version(version).is_some_and(|min| host.kernel >= min);
    let applies = |rule: &Rule| {
        let (inc, exc) = (&rule.includes, &rule.excludes);
        !exc.caps.iter().any(has)
            && !exc.arches.iter().any(|a| a == host.arch)
            && !exc.min_kernel.as_ref().is_some_and(kernel_at_least)
            && inc.caps.iter().all(has)
            && (inc.arches.is_empty() || inc.arches.iter().any(|a| a == host.arch))
            && inc.min_kernel.as_ref().is_none_or(kernel_at_least)
    };
    let syscalls: Vec<LinuxSyscall> = profile
        .syscalls
        .iter()
        .filter(|rule| applies(rule))
        .map(|rule| {
            let mut syscall = LinuxSyscall::default();
            syscall
                .set_names(rule.names.clone())
                .set_action(rule.action)
                .set_errno_ret(rule.errno_ret)
                .set_args(Some(rule.args.clone()).filter(|a| !a.is_empty()));
            syscall
        })
        .collect();
    let architectures: Vec<Arch> = seccomp_arch(host.arch)
        .and_then(|native| profile.arch_map.iter().find(|m| m.architecture == native))
        .map(|map| {
            std::iter::once(&map.architecture)
                .chain(&map.sub_architectures)
                .filter_map(|name| {
                    serde_json::from_value(serde_json::Value::String(name.clone())).ok()
                })
                .collect()
        })
        .unwrap_or_default();
    let mut filter = LinuxSeccomp::default();
    filter
        .set_default_action(profile.default_action)
        .set_default_errno_ret(Some(profile.default_errno_ret.unwrap_or(EPERM)))
        .set_architectures(Some(architectures).filter(|a| !a.is_empty()))
        .set_syscalls(Some(syscalls));
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    const AMD64: Host = Host {
        arch: "amd64",
        kernel: (6, 1),
    };

    fn rules_for<'a>(filter: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        filter
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|s| s.names().iter().any(|n| n == name))
            .collect()
    }

    fn default_caps() -> HashSet<Capability> {
        super::super::oci::DEFAULT_CAPABILITIES
            .into_iter()
            .collect()
    }

    #[test]
    fn denies_by_default_with_eperm_on_the_host_arches() {
        let filter = default_filter(&default_caps(), &AMD64);
        assert_eq!(filter.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(filter.default_errno_ret(), Some(EPERM));
        assert_eq!(
            filter.architectures().clone().unwrap(),
            [Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
        let read = rules_for(&filter, "read");
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].action(), LinuxSeccompAction::ScmpActAllow);
        // Per architecture: x86's arch_prctl, never ARM's cacheflush.
        assert_eq!(rules_for(&filter, "arch_prctl").len(), 1);
        assert!(rules_for(&filter, "cacheflush").is_empty());
        let arm = default_filter(
            &default_caps(),
            &Host {
                arch: "arm64",
                kernel: (6, 1),
            },
        );
        assert!(rules_for(&arm, "arch_prctl").is_empty());
        assert_eq!(rules_for(&arm, "cacheflush").len(), 1);
    }

    #[test]
    fn namespaces_and_mounts_need_sys_admin() {
        let filter = default_filter(&default_caps(), &AMD64);
        for name in ["mount", "unshare", "setns", "umount2"] {
            assert!(rules_for(&filter, name).is_empty(), "{name} is allowed");
        }
        // clone only without namespace flags; clone3 answers ENOSYS so that libcs
        // fall back to clone.
        let clone = rules_for(&filter, "clone");
        assert_eq!(clone.len(), 1);
        let arg = clone[0].args().as_ref().unwrap()[0];
        assert_eq!((arg.index(), arg.value()), (0, 0x7E02_0000));
        let clone3 = rules_for(&filter, "clone3");
        assert_eq!(
            (clone3.len(), clone3[0].errno_ret()),
            (1, Some(38)),
            "{clone3:?}"
        );
        assert_eq!(rules_for(&filter, "personality").len(), 5);

        let mut caps = default_caps();
        caps.insert(Capability::SysAdmin);
        let admin = default_filter(&caps, &AMD64);
        for name in ["mount", "unshare", "setns", "clone3"] {
            let rules = rules_for(&admin, name);
            assert_eq!(rules.len(), 1, "{name}");
            assert_eq!(rules[0].action(), LinuxSeccompAction::ScmpActAllow);
        }
    }

    #[test]
    fn kernel_versions_gate_rules() {
        assert_eq!(kernel_version("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(kernel_version("4.8"), Some((4, 8)));
        let old = Host {
            arch: "amd64",
            kernel: (4, 4),
        };
        // ptrace is safe from 4.8 on only.
        assert!(rules_for(&default_filter(&default_caps(), &old), "ptrace").is_empty());
        assert_eq!(
            rules_for(&default_filter(&default_caps(), &AMD64), "ptrace").len(),
            1
        );
    }
}
