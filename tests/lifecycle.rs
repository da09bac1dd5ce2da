//! Apps as systemd units, end to end: appunitd runs inside the systemd sandbox with a
//! registry there, and installs a two-service app through every phase to running.

mod common;

use common::images::{Layer, build_image_in};
use common::sandbox::Sandbox;
use common::{Call, REPO, Reply};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A sandbox with a registry holding the busybox test image, and appunitd serving.
struct Host {
    sandbox: Sandbox,
}

impl Host {
    fn boot() -> Host {
        let sandbox = Sandbox::boot("");
        sandbox.start_registry();
        std::fs::create_dir_all(sandbox.path("run/images")).unwrap();
        let image = build_image_in(
            &sandbox.path("run/images"),
            &[Layer::busybox(), Layer::file("www/index.html", "duo web\n")],
            &["sh"],
        );
        sandbox.push(image.layout.path(), "test/busybox:1");
        let config = format!(
            "catalog_dirs = [\"{REPO}/tests/fixtures/catalog\"]\npublic_host = \"127.0.0.1\"\n\
             [registries.\"127.0.0.1:5000\"]\ninsecure = true\n"
        );
        std::fs::write(sandbox.path("etc-appunit/config.toml"), config).unwrap();
        let host = Host { sandbox };
        host.start_daemon();
        host
    }

    fn start_daemon(&self) {
        self.sandbox.service(
            "appunitd",
            &[
                "-p",
                "Type=notify",
                env!("CARGO_BIN_EXE_appunitd"),
                "--config",
                "/etc/appunit/config.toml",
            ],
        );
    }

    async fn call(&self, action: &str, query: &str) -> Reply {
        common::send(
            &self.sandbox.path("run/appunit/appunit.sock"),
            Call::get(action, query),
        )
        .await
    }

    async fn status(&self, app_id: &str) -> serde_json::Value {
        self.call("AppStatus", &format!("app_id={app_id}"))
            .await
            .data()
            .clone()
    }

    /// Polls AppStatus until `done` holds; every status code seen on the way.
    async fn watch(
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

    fn task_pids(&self) -> BTreeSet<String> {
        let out = self.sandbox.run("ctr", &["-n", "appunit", "tasks", "ls"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|line| line.split_whitespace().nth(1).map(str::to_string))
            .collect()
    }

    /// Whatever of the app is left on the host: unit file, containers, tasks,
    /// containers' snapshots, leases, network namespace.
    fn leftovers(&self, app_id: &str) -> Vec<String> {
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

    fn journal(&self, unit: &str) -> String {
        let out = self
            .sandbox
            .run("journalctl", &["-u", unit, "--no-pager", "-o", "cat"]);
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

fn is_code(code: &'static str) -> impl Fn(&serde_json::Value) -> bool {
    move |status| status["status_code"] == code
}

fn settled(status: &serde_json::Value) -> bool {
    status["status_code"] == "30" || status["status_code"] == "50"
}

#[tokio::test]
async fn install_to_running_and_every_lifecycle_action() {
    let host = Host::boot();
    let reply = host
        .call(
            "AppInstall",
            "app_name=duo&customer_app_name=blog&app_version=1",
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let (status, seen) = host.watch("blog", Duration::from_secs(90), settled).await;
    assert_eq!(
        status["status"],
        "running",
        "{status} after {seen:?}\n{}\n{}",
        host.journal("appunit-blog.service"),
        host.journal("appunitd.service")
    );
    // Each phase in order; the fast ones may slip between two polls.
    let order = ["00", "10", "11", "12", "30"];
    let positions: Vec<usize> = seen
        .iter()
        .map(|c| order.iter().position(|o| o == c).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(
        seen.contains(&"12".to_string()),
        "initing was never seen: {seen:?}"
    );
    let info = &status["running_info"];
    assert_eq!(info["port"], 9100);
    assert_eq!(info["url"], "http://127.0.0.1:9100");
    assert_eq!(info["admin_url"], "http://127.0.0.1:9100/admin");
    assert!(info["password"].as_str().unwrap().len() >= 16);

    assert_eq!(
        host.sandbox
            .systemctl(&["is-active", "appunit-blog.service"]),
        "active"
    );
    assert_eq!(
        host.sandbox
            .systemctl(&["is-enabled", "appunit-blog.service"]),
        "enabled"
    );
    let journal = host.journal("appunit-blog.service");
    for line in ["db starting", "web starting", "web reached db"] {
        assert!(
            journal.contains(line),
            "{line:?} not in the journal:\n{journal}"
        );
    }
    // Both containers run in the app's slice.
    let slice = host.sandbox.systemctl(&["status", "appunit-blog.slice"]);
    assert!(
        slice.contains("appunit-blog-web.scope") && slice.contains("appunit-blog-db.scope"),
        "{slice}"
    );

    // AppStop: stopped, and it stays stopped (disabled for boot).
    assert_eq!(host.call("AppStop", "app_id=blog").await.status, 200);
    let status = host.status("blog").await;
    assert_eq!(
        (status["status_code"].as_str(), status["status"].as_str()),
        (Some("40"), Some("stopped"))
    );
    assert_eq!(status["running_info"], serde_json::Value::Null);
    assert_eq!(
        host.sandbox
            .systemctl(&["is-active", "appunit-blog.service"]),
        "inactive"
    );
    assert_eq!(
        host.sandbox
            .systemctl(&["is-enabled", "appunit-blog.service"]),
        "disabled"
    );
    assert!(host.task_pids().is_empty());

    assert_eq!(host.call("AppStart", "app_id=blog").await.status, 200);
    assert_eq!(host.status("blog").await["status"], "running");
    let before = host.task_pids();
    assert_eq!(before.len(), 2);

    assert_eq!(host.call("AppRestart", "app_id=blog").await.status, 200);
    assert_eq!(host.status("blog").await["status"], "running");
    let after = host.task_pids();
    assert_eq!(after.len(), 2);
    assert!(before.is_disjoint(&after), "{before:?} → {after:?}");

    // A stop by hand shows in the next AppStatus, within a second.
    host.sandbox.systemctl(&["stop", "appunit-blog.service"]);
    host.watch("blog", Duration::from_secs(1), |s| s["status"] == "stopped")
        .await;

    let reply = host.call("AppUninstall", "app_id=blog").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        host.call("AppStatus", "app_id=blog").await.code(),
        "Param.APPID.NotExist"
    );
    let left = host.leftovers("blog");
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(!host.sandbox.path("appunit/apps/blog").exists());
}

#[tokio::test]
async fn failed_installs_have_a_reason_and_leave_nothing() {
    let host = Host::boot();
    host.call(
        "AppInstall",
        "app_name=crashy&customer_app_name=crash&app_version=1",
    )
    .await;
    host.call(
        "AppInstall",
        "app_name=noimage&customer_app_name=lost&app_version=1",
    )
    .await;

    // The container dies after it started: the app is installed, in error, with why.
    let (crashed, _) = host
        .watch("crash", Duration::from_secs(90), is_code("50"))
        .await;
    let detail = crashed["status_reason"]["Detail"]
        .as_str()
        .unwrap_or_default();
    assert!(detail.contains("exited with status 3"), "{crashed}");
    assert_eq!(crashed["status_reason"]["Code"], "Server.Container.Error");

    // The image is nowhere: the install fails, and leaves nothing but its record.
    let (lost, _) = host
        .watch("lost", Duration::from_secs(90), is_code("50"))
        .await;
    let detail = lost["status_reason"]["Detail"].as_str().unwrap_or_default();
    assert!(detail.contains("127.0.0.1:5000/test/nowhere:1"), "{lost}");
    let left = host.leftovers("lost");
    assert!(left.is_empty(), "lost left behind: {left:?}");

    for app_id in ["crash", "lost"] {
        let reply = host.call("AppUninstall", &format!("app_id={app_id}")).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let left = host.leftovers(app_id);
        assert!(
            left.is_empty(),
            "{app_id} left behind: {left:?}\n{}",
            host.journal("appunitd.service")
        );
    }
}
