//! systemd as PID 1 of a private PID + mount (+ network) namespace, with its own
//! /run, containerd state, appunit state, unit folder and /etc/appunit (TESTING.md).
//! Dropping the sandbox kills that systemd, which ends the whole namespace.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub struct Sandbox {
    pub dir: TempDir,
    unshare: Child,
    /// Host PID of the sandbox's systemd.
    pub pid: u32,
}

/// Inside the sandbox, this repository and the folder of the appunitd under test.
pub const REPO_INSIDE: &str = "/run/appunit-repo";
pub const APPUNITD_INSIDE: &str = "/run/appunit-bin/appunitd";
pub const SUPERVISOR_INSIDE: &str = "/run/appunit-bin/appunit-supervisor";

/// The target the sandbox boots: app units are `WantedBy=` it in tests, since the
/// sandbox does not start multi-user.target (it would start getty on the host's tty).
pub const TARGET: &str = "appunit-sandbox.target";

/// The folder of the appunitd this test build made.
pub fn test_binaries() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_appunitd"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The folder of the release appunitd, the one the packages ship, built for it as
/// packaging/build builds it (so either build finds the other's done).
pub fn release_binaries() -> PathBuf {
    let build = Command::new("cargo")
        .args(["build", "--locked", "--release", "--bins"])
        .current_dir(super::REPO)
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "cargo build --release: {}",
        String::from_utf8_lossy(&build.stderr)
    );
    super::target_dir().join("release")
}

fn new_folder() -> TempDir {
    tempfile::Builder::new()
        .prefix("appunit-sbx")
        .tempdir()
        .unwrap()
}

impl Sandbox {
    /// Boots a sandbox; `wants` are extra units its target pulls in.
    pub fn boot(wants: &str) -> Sandbox {
        Sandbox::boot_running(wants, &test_binaries())
    }

    /// Boots a sandbox whose appunitd is the one in the folder `binaries`.
    pub fn boot_running(wants: &str, binaries: &Path) -> Sandbox {
        Sandbox::start(new_folder(), wants, None, binaries)
    }

    /// Boots with /usr, /etc and /var as overlays whose writes stay in the sandbox's
    /// folder, so that a package can be installed inside; /var/lib/appunit and
    /// /etc/appunit are then the package's.
    pub fn boot_with_overlay_root(wants: &str) -> Sandbox {
        Sandbox::start(new_folder(), wants, Some("overlay"), &test_binaries())
    }

    /// Boots on the folders of an earlier sandbox: a reboot.
    pub fn boot_in(dir: TempDir, wants: &str) -> Sandbox {
        Sandbox::reboot_running(dir, wants, &test_binaries())
    }

    /// A reboot whose appunitd is the one in the folder `binaries`.
    pub fn reboot_running(dir: TempDir, wants: &str, binaries: &Path) -> Sandbox {
        Sandbox::start(dir, wants, None, binaries)
    }

    fn start(dir: TempDir, wants: &str, mode: Option<&str>, binaries: &Path) -> Sandbox {
        let root = dir.path();
        for sub in ["run", "containerd", "appunit", "units", "etc-appunit"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        // The mount points must exist on the host.
        for point in ["/var/lib/containerd", "/var/lib/appunit", "/etc/appunit"] {
            std::fs::create_dir_all(point).unwrap();
        }
        // /run starts empty at every boot, as on a real machine. The unit folder starts
        // empty too: the host's enabled services (a registry, nginx, …) stay out.
        let _ = std::fs::remove_dir_all(root.join("run"));
        std::fs::create_dir_all(root.join("run")).unwrap();
        let unshare = Command::new("unshare")
            .args(["--pid", "--mount", "--net", "--fork", "--mount-proc"])
            .arg(Path::new(super::REPO).join("scripts/sandbox-boot"))
            .arg(root)
            .arg(wants)
            .arg(TARGET)
            .arg(super::REPO)
            .arg(binaries)
            .args(mode)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let pid = loop {
            let children =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id()))
                    .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                break pid.parse().unwrap();
            }
            assert!(Instant::now() < deadline, "the sandbox did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        let sandbox = Sandbox { dir, unshare, pid };
        sandbox.wait_until("the system bus", |s| s.bus_socket().exists());
        sandbox.wait_until("containerd", |s| {
            s.path("run/containerd/containerd.sock").exists()
        });
        sandbox
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn bus_socket(&self) -> PathBuf {
        self.path("run/dbus/system_bus_socket")
    }

    pub fn bus_address(&self) -> String {
        format!("unix:path={}", self.bus_socket().display())
    }

    /// A command inside the sandbox's mount, PID and network namespaces.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-m", "-p", "-n", "--"])
            .arg(program)
            .args(args)
            .output()
            .unwrap()
    }

    /// A command inside that must succeed; its stdout.
    pub fn must(&self, program: &str, args: &[&str]) -> String {
        let output = self.run(program, args);
        assert!(
            output.status.success(),
            "{program} {args:?}: {}",
            super::text(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `systemctl ARGS…` inside, its trimmed stdout (whatever the exit status).
    pub fn systemctl(&self, args: &[&str]) -> String {
        let output = self.run("systemctl", args);
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// A command as a transient service of the sandbox's systemd: it lives as long as
    /// the sandbox, or until stopped.
    pub fn service(&self, unit: &str, command: &[&str]) {
        let mut args = vec!["--unit", unit, "--collect"];
        args.extend_from_slice(command);
        let output = self.run("systemd-run", &args);
        assert!(
            output.status.success(),
            "systemd-run {command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// distribution 2.8 inside the sandbox on 127.0.0.1:5000, storing under /run.
    pub fn start_registry(&self) {
        std::fs::create_dir_all(self.path("run/registry-data")).unwrap();
        std::fs::write(
            self.path("run/registry.yml"),
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: /run/registry-data\nhttp:\n  addr: 127.0.0.1:5000\n",
        )
        .unwrap();
        self.service(
            "test-registry",
            &["/usr/bin/docker-registry", "serve", "/run/registry.yml"],
        );
        self.wait_until("the registry", |s| {
            s.run("busybox", &["wget", "-qO-", "http://127.0.0.1:5000/v2/"])
                .status
                .success()
        });
    }

    /// Pushes an image layout that lies below the sandbox's /run to its registry.
    pub fn push(&self, layout: &std::path::Path, name: &str) {
        let inside = PathBuf::from("/run").join(layout.strip_prefix(self.path("run")).unwrap());
        let source = format!("oci:{}:latest", inside.display());
        let target = format!("docker://127.0.0.1:5000/{name}");
        let output = self.run(
            "skopeo",
            &[
                "--insecure-policy",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                "--preserve-digests",
                &source,
                &target,
            ],
        );
        assert!(
            output.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub fn wait_until(&self, what: &str, ready: impl Fn(&Sandbox) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready(self) {
            assert!(Instant::now() < deadline, "sandbox: {what} did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ends the sandbox (every process in it) but keeps its folders, for a reboot.
    pub fn shut_down(mut self) -> TempDir {
        self.kill();
        let dir = tempfile::Builder::new()
            .prefix("appunit-sbx")
            .tempdir()
            .unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
        let _ = self.unshare.wait();
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.kill();
        // Overlay mounts of containerd vanish with the mount namespace; files remain.
    }
}
