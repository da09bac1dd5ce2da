//! Faults of the real components under running and installing apps: containerd
//! restarts, systemd reloads and re-executes itself (TESTING.md, fault injection).

mod common;

use common::host::Host;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// `MainPID=…` and `NRestarts=…` of an app's unit: they change if the unit restarts.
fn unit_incarnation(host: &Host, app_id: &str) -> String {
    host.sandbox.systemctl(&[
        "show",
        "-p",
        "MainPID,NRestarts",
        &format!("appunit-{app_id}.service"),
    ])
}

/// Task PID by container id (`ctr tasks ls`: TASK PID STATUS).
fn tasks(host: &Host) -> BTreeMap<String, String> {
    let out = host.sandbox.run("ctr", &["-n", "appunit", "tasks", "ls"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some((fields.next()?.to_string(), fields.next()?.to_string()))
        })
        .collect()
}

async fn install(host: &Host, app_id: &str, version: &str) {
    let query = format!("app_name=duo&customer_app_name={app_id}&app_version={version}");
    let reply = host.call("AppInstall", &query).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

async fn assert_running(host: &Host, app_id: &str) {
    host.running(app_id, Duration::from_secs(120)).await;
    assert_eq!(host.page(app_id), format!("duo {app_id}\n"));
}

/// containerd restarts under three running apps: no app restarts, their containers
/// keep running, and their supervisors still see a real exit afterwards.
#[tokio::test]
async fn apps_survive_a_containerd_restart() {
    let host = Host::boot();
    let apps = ["one", "two", "three"];
    for app_id in apps {
        install(&host, app_id, "1").await;
    }
    for app_id in apps {
        assert_running(&host, app_id).await;
    }
    let before: Vec<String> = apps.iter().map(|a| unit_incarnation(&host, a)).collect();
    let tasks_before = tasks(&host);
    assert_eq!(tasks_before.len(), 6, "{tasks_before:?}");

    let restarted = Instant::now();
    let out = host.sandbox.run("systemctl", &["restart", "containerd"]);
    assert!(out.status.success(), "{out:?}");
    for app_id in apps {
        host.watch(app_id, Duration::from_secs(5), |s| s["status_code"] == "30")
            .await;
    }
    eprintln!(
        "all running again {:?} after the restart",
        restarted.elapsed()
    );
    // Longer than the units' RestartSec=5: a unit that failed would have restarted.
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        for app_id in apps {
            let status = host.status(app_id).await;
            assert_eq!(
                status["status_code"],
                "30",
                "{app_id}: {status}\n{}",
                host.journal(&format!("appunit-{app_id}.service"))
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after: Vec<String> = apps.iter().map(|a| unit_incarnation(&host, a)).collect();
    assert_eq!(before, after, "the units restarted");
    assert_eq!(tasks(&host), tasks_before, "the containers restarted");
    for app_id in apps {
        assert_eq!(host.page(app_id), format!("duo {app_id}\n"));
    }

    // Each supervisor waits on its tasks again: a container that dies now still ends
    // its app (and the unit's Restart= brings it back).
    let db = &tasks_before["one-db"];
    host.sandbox.run("kill", &["-9", db]);
    host.watch("one", Duration::from_secs(5), |s| s["status_code"] != "30")
        .await;
    assert_ne!(unit_incarnation(&host, "one"), before[0]);
    host.watch("one", Duration::from_secs(60), |s| s["status_code"] == "30")
        .await;
    assert_eq!(host.page("one"), "duo one\n");
    for (app_id, before) in apps.iter().zip(&before).skip(1) {
        assert_eq!(&unit_incarnation(&host, app_id), before);
    }
}

/// `systemctl daemon-reload` and `daemon-reexec` while installs pull and init: each
/// install still ends running, and the app serves its page.
#[tokio::test]
async fn installs_survive_systemd_reloads_and_reexecs() {
    let host = Host::boot();
    // Version 2 is the big image: its pull lasts long enough to be caught; version 1's
    // may be done before the first poll.
    let cases = [
        ("first", "2", ["daemon-reload", "daemon-reexec"]),
        ("second", "1", ["daemon-reexec", "daemon-reload"]),
    ];
    for (app_id, version, faults) in cases {
        install(&host, app_id, version).await;
        let mut phases = Vec::new();
        for (phase, fault) in ["10", "12"].into_iter().zip(faults) {
            let (status, _) = host
                .watch(app_id, Duration::from_secs(60), |s| {
                    s["status_code"].as_str().is_some_and(|c| c >= phase)
                })
                .await;
            assert_ne!(
                status["status_code"],
                "50",
                "{app_id}: {status}\n{}\n{}",
                host.journal(&format!("appunit-{app_id}.service")),
                host.journal("appunitd.service")
            );
            phases.push(status["status_code"].as_str().unwrap_or("").to_string());
            let out = host.sandbox.run("systemctl", &[fault]);
            assert!(out.status.success(), "{fault}: {out:?}");
        }
        eprintln!("{faults:?} hit {app_id} in phases {phases:?}");
        assert_eq!(phases[1], "12", "{app_id}: initing was missed");
        if version == "2" {
            assert_eq!(phases[0], "10", "{app_id}: pulling was missed");
        }
        assert_running(&host, app_id).await;
    }
}

/// An app stopped while containerd is down: the stop ends in bounded time with its
/// containers' processes gone, and the app starts again once containerd is back.
#[tokio::test]
async fn an_app_stops_while_containerd_is_down() {
    let host = Host::boot();
    install(&host, "calm", "1").await;
    assert_running(&host, "calm").await;
    let pids: Vec<String> = tasks(&host).into_values().collect();
    assert_eq!(pids.len(), 2, "{pids:?}");

    let out = host.sandbox.run("systemctl", &["stop", "containerd"]);
    assert!(out.status.success(), "{out:?}");
    let stopping = Instant::now();
    host.sandbox.systemctl(&["stop", "appunit-calm.service"]);
    let took = stopping.elapsed();
    eprintln!("stopped in {took:?} while containerd was down");
    // Each service's 2 s grace, then SIGKILL (busybox httpd as PID 1 ignores SIGTERM).
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(
        host.sandbox
            .systemctl(&["is-active", "appunit-calm.service"]),
        "inactive",
        "{}",
        host.journal("appunit-calm.service")
    );
    for pid in &pids {
        let alive = host.sandbox.run("test", &["-d", &format!("/proc/{pid}")]);
        assert!(
            !alive.status.success(),
            "container process {pid} still runs"
        );
    }

    let out = host.sandbox.run("systemctl", &["start", "containerd"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(host.call("AppStart", "app_id=calm").await.status, 200);
    assert_running(&host, "calm").await;
}
