//! A hundred apps on one host (issue 14, "Scale"), run by the release build the packages
//! ship: installed at once they reach running in under 45 s; with them AppList takes
//! under 5 ms at p99 and the daemon's RSS stays under 30 MB; a reboot brings them all
//! back in under 30 s. The measured figures are printed (the README's "Scale" quotes
//! them); every bound is checked after all were measured.

mod common;

use common::Call;
use common::host::Host;
use common::sandbox::{self, Sandbox};
use std::time::{Duration, Instant};

const APPS: usize = 100;

fn app_id(i: usize) -> String {
    format!("sc{i:03}")
}

/// Polls AppList until every app runs; the time it took. Panics on an app in error, or
/// after `limit`, naming the apps that were not running.
async fn until_all_running(host: &Host, since: Instant, limit: Duration) -> Duration {
    loop {
        let reply = host.call("AppList", "").await;
        if reply.status == 200 {
            let apps = reply.data().as_array().unwrap().clone();
            if let Some(failed) = apps.iter().find(|a| a["status_code"] == "50") {
                panic!("{failed}\n{}", host.journal("appunitd.service"));
            }
            let running = apps.iter().filter(|a| a["status_code"] == "30").count();
            if running == APPS {
                return since.elapsed();
            }
            if since.elapsed() > limit {
                let late: Vec<_> = apps
                    .iter()
                    .filter(|a| a["status_code"] != "30")
                    .map(|a| format!("{} {}", a["app_id"], a["status"]))
                    .collect();
                panic!("{running}/{APPS} running after {limit:?}; not: {late:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sandbox's appunitd as /proc/PID/status shows it: sizes in KiB.
struct Footprint {
    rss: u64,
    anon: u64,
    file: u64,
    threads: u64,
}

impl Footprint {
    fn of_daemon(host: &Host) -> Footprint {
        let pid = host
            .sandbox
            .systemctl(&["show", "-p", "MainPID", "--value", "appunitd.service"]);
        let status = host.sandbox.run("cat", &[&format!("/proc/{pid}/status")]);
        let status = String::from_utf8_lossy(&status.stdout);
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} for appunitd (pid {pid}): {status}"))
        };
        Footprint {
            rss: field("VmRSS"),
            anon: field("RssAnon"),
            file: field("RssFile"),
            threads: field("Threads"),
        }
    }
}

impl std::fmt::Display for Footprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |kib: u64| kib as f64 / 1024.0;
        write!(
            f,
            "RSS {:.1} MiB (anonymous {:.1}, file {:.1}), {} threads",
            mib(self.rss),
            mib(self.anon),
            mib(self.file),
            self.threads
        )
    }
}

/// The daemon's footprint once it is idle: it returns what a burst of work freed when
/// the apps have stopped changing for a second.
async fn settled_footprint(host: &Host) -> Footprint {
    tokio::time::sleep(Duration::from_secs(2)).await;
    Footprint::of_daemon(host)
}

#[tokio::test]
async fn a_hundred_apps() {
    // The daemon and supervisors the packages ship, whose footprint the issue bounds.
    let release = sandbox::release_binaries();
    let host = Host::boot_in(Sandbox::boot_running("", &release));
    let started = Instant::now();
    for i in 1..=APPS {
        let query = format!(
            "app_name=tiny&customer_app_name={}&app_version=1",
            app_id(i)
        );
        let reply = host.call("AppInstall", &query).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    // A bound well past 45 s, so that a slow run is measured rather than cut short.
    let installed = until_all_running(&host, started, Duration::from_secs(120)).await;
    println!("{APPS} installs queued at once: all running in {installed:.1?}");

    let mut latencies: Vec<Duration> = Vec::with_capacity(200);
    for _ in 0..200 {
        let asked = Instant::now();
        let (status, _, body) = common::fetch(&host.socket(), Call::get("AppList", "")).await;
        latencies.push(asked.elapsed());
        // Checked past the clock: the test's own JSON parse is not the daemon's time.
        let envelope: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 200);
        assert_eq!(envelope["ResponseData"].as_array().unwrap().len(), APPS);
    }
    latencies.sort();
    let (p50, p99) = (latencies[100], latencies[197]);
    let slowest = latencies[199];
    println!(
        "AppList of {APPS} apps, 200 sequential requests: p50 {p50:.2?}, p99 {p99:.2?}, slowest {slowest:.2?}"
    );
    let with_apps = settled_footprint(&host).await;
    println!("appunitd with {APPS} running apps: {with_apps}");

    let folders = host.sandbox.shut_down();
    let rebooted = Instant::now();
    let host = Host::on(Sandbox::reboot_running(folders, "", &release));
    host.start_daemon();
    let back = until_all_running(&host, rebooted, Duration::from_secs(90)).await;
    println!("after a reboot: all {APPS} running again in {back:.1?}");
    let after_boot = settled_footprint(&host).await;
    println!("appunitd after the reboot: {after_boot}");

    assert!(
        installed < Duration::from_secs(45),
        "installs: {installed:?}"
    );
    // The target: 30 MB of RSS, for the daemon the packages ship (23.9 MiB
    // measured with the apps, 12.4 after the reboot).
    assert!(
        with_apps.rss.max(after_boot.rss) * 1024 < 30_000_000,
        "appunitd: {with_apps}; after the reboot: {after_boot}"
    );
    assert!(back < Duration::from_secs(30), "reboot: {back:?}");
    assert!(p99 < Duration::from_millis(5), "AppList p99 {p99:?}");
}
