//! Faults during a pull, on real systemd, containerd and registry in a sandbox: the
//! install ends in error with the cause, nothing of the app is left, and the daemon
//! serves on unharmed.

mod common;

use common::host::{Host, settled};
use common::images::{Layer, build_image_in};
use std::time::Duration;

/// duo version 2 pulls test/busybox:2, which `boot` makes big.
const BIG_INSTALL: &str = "app_name=duo&app_version=2&customer_app_name=";

/// A sandbox whose test/busybox:2 carries 64 MiB of incompressible bytes: more than
/// socket buffers hold, so a registry killed early cannot have sent it all, and more
/// than a small disk holds.
fn boot() -> Host {
    let host = Host::boot();
    let mut noise = vec![0u8; 64 << 20];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut noise);
    let image = build_image_in(
        &host.sandbox.path("run/images"),
        &[Layer::busybox(), Layer::file("noise", noise)],
        &["sh"],
    );
    host.sandbox.push(image.layout.path(), "test/busybox:2");
    host
}

fn daemon_pid(host: &Host) -> String {
    host.sandbox
        .systemctl(&["show", "--property=MainPID", "--value", "appunitd.service"])
}

/// The registry's PID as the host sees it: killing it then takes one system call, not
/// a systemctl round trip during which a local pull can finish.
fn registry_pid(host: &Host) -> nix::unistd::Pid {
    let inside = host.sandbox.systemctl(&[
        "show",
        "--property=MainPID",
        "--value",
        "test-registry.service",
    ]);
    let namespace = std::fs::read_link(format!("/proc/{}/ns/pid", host.sandbox.pid)).unwrap();
    let found = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            let same_namespace =
                std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|ns| ns == namespace);
            // `NSpid: <host pid> <pid inside>`
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let pid_inside = status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|ids| ids.split_whitespace().last().map(str::to_string));
            same_namespace && pid_inside.as_deref() == Some(inside.as_str())
        })
        .expect("the registry's process");
    nix::unistd::Pid::from_raw(found)
}

/// Installs the big version of duo as `app_id`, and waits until its pull has begun.
async fn install_big(host: &Host, app_id: &str) -> serde_json::Value {
    let reply = host
        .call("AppInstall", &format!("{BIG_INSTALL}{app_id}"))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let (status, _) = host
        .watch(app_id, Duration::from_secs(60), |s| {
            s["status_code"] != "00"
                && (s["status_code"] != "10" || s["progress"]["done_bytes"].as_u64() > Some(0))
        })
        .await;
    status
}

/// Settles `app_id` and checks the failure: status error, the reason's Detail
/// containing `cause`. Then checks nothing of the app is left, that the daemon still
/// serves as the same process, and that uninstalling works.
async fn check_failed_cleanly(host: &Host, app_id: &str, pid: &str, cause: &str) {
    let (status, seen) = host.watch(app_id, Duration::from_secs(120), settled).await;
    let journal = || host.journal("appunitd.service");
    assert_eq!(status["status_code"], "50", "{status} after {seen:?}");
    assert_eq!(status["status"], "error");
    let reason = &status["status_reason"];
    let detail = reason["Detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("127.0.0.1:5000/test/busybox:2")
            && detail.to_lowercase().contains(&cause.to_lowercase()),
        "the reason does not name the image and {cause:?}: {reason}\n{}",
        journal()
    );
    assert!(status["progress"].is_null(), "{status}");
    let left = host.leftovers(app_id);
    assert!(left.is_empty(), "{app_id} left behind: {left:?}");

    assert_eq!(daemon_pid(host), pid, "appunitd restarted:\n{}", journal());
    let list = host.call("AppList", "").await;
    assert_eq!(list.status, 200, "{list:?}");
    let uninstall = host.call("AppUninstall", &format!("app_id={app_id}")).await;
    assert_eq!(uninstall.status, 200, "{uninstall:?}");
    let gone = host.call("AppStatus", &format!("app_id={app_id}")).await;
    assert_eq!(gone.code(), "Param.APPID.NotExist", "{gone:?}");
    let left = host.leftovers(app_id);
    assert!(left.is_empty(), "{app_id} left behind: {left:?}");
}

/// The registry is killed while less than half of the image is in.
#[tokio::test]
async fn a_registry_killed_mid_pull_fails_the_install_cleanly() {
    let host = boot();
    let pid = daemon_pid(&host);
    let registry = registry_pid(&host);
    let status = install_big(&host, "orphan").await;
    nix::sys::signal::kill(registry, nix::sys::signal::Signal::SIGKILL).unwrap();
    let percent = status["progress"]["percent"].as_u64();
    assert!(
        status["status_code"] == "10" && percent < Some(50),
        "the pull was not caught in its first half: {status}"
    );
    eprintln!("killed the registry at {percent:?}%");
    // The layer's download broke off: hyper says "connection" either way.
    check_failed_cleanly(&host, "orphan", &pid, "connection").await;
}

/// containerd's root is a 30 MiB tmpfs: the 48 MiB image does not fit.
#[tokio::test]
async fn a_full_disk_fails_the_install_cleanly() {
    let host = boot();
    let pid = daemon_pid(&host);
    let mounted = host.sandbox.run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=30m",
            "tmpfs",
            "/var/lib/containerd",
        ],
    );
    assert!(mounted.status.success(), "{mounted:?}");
    host.sandbox.systemctl(&["restart", "containerd.service"]);
    host.sandbox.wait_until("containerd on the tmpfs", |s| {
        s.run("ctr", &["version"]).status.success()
    });
    install_big(&host, "crammed").await;
    check_failed_cleanly(&host, "crammed", &pid, "no space left on device").await;

    // No half-written blob keeps the disk full.
    let active = host
        .sandbox
        .run("ctr", &["-n", "appunit", "content", "active"]);
    let ingests = host.sandbox.run(
        "ls",
        &[
            "-A",
            "/var/lib/containerd/io.containerd.content.v1.content/ingest",
        ],
    );
    let (active, ingests) = (
        String::from_utf8_lossy(&active.stdout).to_string(),
        String::from_utf8_lossy(&ingests.stdout).to_string(),
    );
    assert!(
        active.lines().skip(1).count() == 0 && ingests.trim().is_empty(),
        "unfinished writes were kept: {active} / {ingests}"
    );
}

/// AppUninstall while the install pulls aborts it: its downloads end and its lease is
/// released, and nothing of the app is left.
#[tokio::test]
async fn an_uninstall_mid_pull_ends_the_pull() {
    let host = boot();
    let pid = daemon_pid(&host);
    let status = install_big(&host, "quitter").await;
    assert_eq!(status["status_code"], "10", "{status}");
    let reply = host.call("AppUninstall", "app_id=quitter").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let answered = std::time::Instant::now();
    // The aborted pull's lease is released by a task of its own, just after.
    host.sandbox
        .wait_until("the aborted pull's lease to go", |_| {
            host.leftovers("quitter").is_empty()
        });
    eprintln!("clean {:?} after AppUninstall answered", answered.elapsed());
    // No download goes on: no write is in progress, now or a moment later.
    let ingest = "/var/lib/containerd/io.containerd.content.v1.content/ingest";
    for _ in 0..2 {
        let ingests = host.sandbox.run("ls", &["-A", ingest]);
        let ingests = String::from_utf8_lossy(&ingests.stdout).to_string();
        assert!(ingests.trim().is_empty(), "writes go on: {ingests}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(daemon_pid(&host), pid);
    assert_eq!(host.call("AppList", "").await.status, 200);
}
