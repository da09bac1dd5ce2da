//! A systemd sandbox with a registry holding the test images, and appunitd serving
//! through its shipped units: what the end-to-end and fault tests run against.

use super::images::{Layer, build_image_in};
use super::sandbox::{APPUNITD_INSIDE, REPO_INSIDE, Sandbox, TARGET};
use super::{Call, Reply};
use rand::SeedableRng;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A sandbox with a registry holding the busybox test image, and appunitd serving.
pub struct Host {
    pub sandbox: Sandbox,
}

/// Starts the sandbox's registry and pushes the test images to it (again after a
/// reboot: the registry keeps them under /run). Built the same way, they have the
/// same digests every time.
pub fn publish_images(sandbox: &Sandbox) {
    sandbox.start_registry();
    std::fs::create_dir_all(sandbox.path("run/images")).unwrap();
    // The web service's named volume at /www starts with these.
    let web = Layer {
        files: vec![
            ("www/index.html".into(), b"duo web\n".to_vec(), 0o644),
            ("www/about.html".into(), b"from the image\n".to_vec(), 0o644),
        ],
        links: Vec::new(),
    };
    let small = build_image_in(
        &sandbox.path("run/images"),
        &[Layer::busybox(), web.clone()],
        &["sh"],
    );
    sandbox.push(small.layout.path(), "test/busybox:1");
    let accounts = Layer {
        files: vec![
            (
                "etc/passwd".into(),
                b"root:x:0:0:root:/root:/bin/sh\nweb:x:1234:1235::/:/bin/sh\n".to_vec(),
                0o644,
            ),
            (
                "etc/group".into(),
                b"root:x:0:\nweb:x:1235:\nstaff:x:50:web\n".to_vec(),
                0o644,
            ),
        ],
        links: Vec::new(),
    };
    let users = build_image_in(
        &sandbox.path("run/images"),
        &[Layer::busybox(), accounts],
        &["sh"],
    );
    sandbox.push(users.layout.path(), "test/users:1");
    // Random, so that gzip leaves 48 MiB to pull (it made 4 of a patterned 48, pulled
    // faster than progress is sampled); seeded, so that the digests stay the same.
    let mut noise = vec![0u8; 48 << 20];
    rand::RngCore::fill_bytes(&mut rand::rngs::StdRng::seed_from_u64(48), &mut noise);
    let big = build_image_in(
        &sandbox.path("run/images"),
        &[Layer::busybox(), web, Layer::file("noise", noise)],
        &["sh"],
    );
    sandbox.push(big.layout.path(), "test/busybox:2");
}

impl Host {
    /// Version 1 of the test image is small; version 2 carries 48 MiB more, so that
    /// its pull takes long enough to be caught in the act.
    pub fn boot() -> Host {
        Host::boot_in(Sandbox::boot(""))
    }

    /// As `boot`, in a sandbox booted by the caller.
    pub fn boot_in(sandbox: Sandbox) -> Host {
        publish_images(&sandbox);
        let host = Host::on(sandbox);
        let config = format!(
            "catalog_dirs = [\"{REPO_INSIDE}/tests/fixtures/catalog\"]\npublic_host = \"127.0.0.1\"\n\
             unit_target = \"{TARGET}\"\n[registries.\"127.0.0.1:5000\"]\ninsecure = true\n"
        );
        std::fs::write(host.sandbox.path("etc-appunit/config.toml"), config).unwrap();
        // The shipped units, with appunitd where the sandbox sees it.
        let systemd = std::path::Path::new(super::REPO).join("systemd");
        let service = std::fs::read_to_string(systemd.join("appunitd.service"))
            .unwrap()
            .replace("/usr/bin/appunitd", APPUNITD_INSIDE);
        std::fs::write(host.sandbox.path("units/appunitd.service"), service).unwrap();
        std::fs::copy(
            systemd.join("appunitd.socket"),
            host.sandbox.path("units/appunitd.socket"),
        )
        .unwrap();
        // Group appunit owns the socket (the package's sysusers file makes it).
        let sysusers = std::process::Command::new("systemd-sysusers")
            .arg(systemd.join("appunit.sysusers"))
            .status()
            .unwrap();
        assert!(sysusers.success());
        host.sandbox.systemctl(&["daemon-reload"]);
        host.start_daemon();
        host
    }

    pub fn on(sandbox: Sandbox) -> Host {
        Host { sandbox }
    }

    /// `kill -9` of appunitd, as in a crash.
    pub fn kill_daemon(&self) {
        self.sandbox
            .systemctl(&["kill", "-s", "KILL", "appunitd.service"]);
        self.sandbox.wait_until("appunitd to die", |s| {
            s.systemctl(&["is-active", "appunitd.service"]) != "active"
        });
        self.sandbox
            .systemctl(&["reset-failed", "appunitd.service"]);
    }

    /// The web page of an app, fetched inside its network namespace.
    ///
    /// Tried for up to 5 s: an app without a health check is running once its
    /// containers are, which may be before its server listens.
    pub fn page(&self, app_id: &str) -> String {
        let netns = format!("appunit-{app_id}");
        let args = [
            "netns",
            "exec",
            &netns,
            "busybox",
            "wget",
            "-qO-",
            "http://127.0.0.1:80/",
        ];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = self.sandbox.run("ip", &args);
            if out.status.success() || Instant::now() > deadline {
                return String::from_utf8_lossy(&out.stdout).to_string();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts appunitd.socket; the first request starts appunitd (socket activation),
    /// which this makes at once, so the daemon reconciles before the test goes on.
    pub fn start_daemon(&self) {
        let out = self.sandbox.run("systemctl", &["start", "appunitd.socket"]);
        assert!(
            out.status.success(),
            "starting appunitd.socket: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let socket = self.sandbox.path("run/appunit/appunit.sock");
        let reply = std::process::Command::new("curl")
            .args([
                "-sf",
                "--unix-socket",
                socket.to_str().unwrap(),
                "http://appunit/AppList",
            ])
            .output()
            .unwrap();
        assert!(
            reply.status.success(),
            "the first request did not start appunitd"
        );
        assert_eq!(
            self.sandbox.systemctl(&["is-active", "appunitd.service"]),
            "active"
        );
    }

    /// The API socket, as the host sees it.
    pub fn socket(&self) -> std::path::PathBuf {
        self.sandbox.path("run/appunit/appunit.sock")
    }

    pub async fn call(&self, action: &str, query: &str) -> Reply {
        super::send(&self.socket(), Call::get(action, query)).await
    }

    pub async fn status(&self, app_id: &str) -> serde_json::Value {
        self.call("AppStatus", &format!("app_id={app_id}"))
            .await
            .data()
            .clone()
    }

    /// Polls AppStatus until `done` holds; every status code seen on the way.
    pub async fn watch(
        &self,
        app_id: &str,
        limit: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> (serde_json::Value, Vec<String>) {
        let deadline = Instant::now() + limit;
        let mut seen: Vec<String> = Vec::new();
        loop {
            let status = self.status(app_id).await;
            let code = status["status_code"].as_str().unwrap_or("").to_string();
            if seen.last() != Some(&code) {
                seen.push(code);
            }
            if done(&status) {
                return (status, seen);
            }
            if Instant::now() > deadline {
                let log = self.journal("appunitd.service");
                panic!("{app_id}: {status} after {seen:?}\nappunitd's journal:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Polls AppStatus until the app settles, which must be as running; the status then.
    /// Otherwise the failure shows the phases seen and the journals of the app and daemon.
    pub async fn running(&self, app_id: &str, limit: Duration) -> serde_json::Value {
        let (status, seen) = self.watch(app_id, limit, settled).await;
        assert_eq!(
            status["status"],
            "running",
            "{app_id}: {status} after {seen:?}\n{}\n{}",
            self.journal(&format!("appunit-{app_id}.service")),
            self.journal("appunitd.service")
        );
        status
    }

    pub fn task_pids(&self) -> BTreeSet<String> {
        let out = self.sandbox.run("ctr", &["-n", "appunit", "tasks", "ls"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|line| line.split_whitespace().nth(1).map(str::to_string))
            .collect()
    }

    /// Whatever of the app is left on the host: unit file, containers, tasks,
    /// containers' snapshots, leases, network namespace.
    pub fn leftovers(&self, app_id: &str) -> Vec<String> {
        let mut left = Vec::new();
        if self
            .sandbox
            .path("units")
            .join(format!("appunit-{app_id}.service"))
            .exists()
        {
            left.push("unit file".to_string());
        }
        for (what, args) in [
            ("container", &["containers", "ls", "-q"][..]),
            ("task", &["tasks", "ls", "-q"][..]),
            ("lease", &["leases", "ls", "-q"][..]),
        ] {
            let mut command = vec!["-n", "appunit"];
            command.extend_from_slice(args);
            let out = self.sandbox.run("ctr", &command);
            left.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    // Any lease left is a leak; containers and tasks only count if the app's.
                    .filter(|l| what == "lease" || l.starts_with(&format!("{app_id}-")))
                    .map(|l| format!("{what}: {l}")),
            );
        }
        let snapshots = self
            .sandbox
            .run("ctr", &["-n", "appunit", "snapshots", "ls"]);
        left.extend(
            String::from_utf8_lossy(&snapshots.stdout)
                .lines()
                .filter(|l| l.starts_with(&format!("{app_id}-")))
                .map(|l| format!("snapshot: {l}")),
        );
        if self
            .sandbox
            .path(&format!("run/netns/appunit-{app_id}"))
            .exists()
        {
            left.push("network namespace".into());
        }
        left
    }

    pub fn journal(&self, unit: &str) -> String {
        let out = self
            .sandbox
            .run("journalctl", &["-u", unit, "--no-pager", "-o", "cat"]);
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

pub fn is_code(code: &'static str) -> impl Fn(&serde_json::Value) -> bool {
    move |status| status["status_code"] == code
}

pub fn settled(status: &serde_json::Value) -> bool {
    status["status_code"] == "30" || status["status_code"] == "50"
}
