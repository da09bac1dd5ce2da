//! AppUninstall on real systemd and containerd, where it is hardest: a large data folder
//! while clients keep asking, and containerd down.

mod common;

use common::host::{Host, settled};
use std::time::{Duration, Instant};

/// 2 GiB in 65,536 files of 32 KiB, allocated (not sparse): deleting them takes the
/// file system real work, seconds of it.
fn fill(folder: &std::path::Path) {
    std::fs::create_dir_all(folder).unwrap();
    for index in 0..65_536 {
        let file = std::fs::File::create(folder.join(format!("blob{index}"))).unwrap();
        nix::fcntl::posix_fallocate(&file, 0, 32 * 1024).unwrap();
    }
}

/// The data folder goes on a blocking thread: AppStatus keeps answering from other
/// clients at its usual pace, and the daemon's watchdog never fires. The daemon runs
/// with one async worker, as on a one-core host, where work that blocks a worker
/// stalls every client.
#[tokio::test]
async fn a_2_gib_uninstall_does_not_stall_the_api() {
    let host = Host::boot();
    let drop_in = host.sandbox.path("units/appunitd.service.d");
    std::fs::create_dir_all(&drop_in).unwrap();
    std::fs::write(
        drop_in.join("one-core.conf"),
        "[Service]\nEnvironment=TOKIO_WORKER_THREADS=1\n",
    )
    .unwrap();
    host.sandbox.systemctl(&["daemon-reload"]);
    host.sandbox.systemctl(&["restart", "appunitd.service"]);
    let environment = host
        .sandbox
        .systemctl(&["show", "-p", "Environment", "appunitd.service"]);
    assert!(
        environment.contains("TOKIO_WORKER_THREADS=1"),
        "{environment}"
    );
    for app_id in ["big", "stay"] {
        let query = format!("app_name=duo&customer_app_name={app_id}&app_version=1");
        assert_eq!(host.call("AppInstall", &query).await.status, 200);
    }
    for app_id in ["big", "stay"] {
        host.running(app_id, Duration::from_secs(120)).await;
    }
    fill(&host.sandbox.path("appunit/apps/big/data/dbdata/fill"));
    let daemon_pid = host
        .sandbox
        .systemctl(&["show", "-p", "MainPID", "--value", "appunitd"]);

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (host, done) = (host.socket(), done.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let started = Instant::now();
                    let reply =
                        common::send(&host, common::Call::get("AppStatus", "app_id=stay")).await;
                    latencies.push(started.elapsed());
                    assert_eq!(reply.data()["status"], "running");
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let reply = host.call("AppUninstall", "app_id=big").await;
    let took = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(reply.status, 200, "{reply:?}");
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await.unwrap());
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "uninstall of 2 GiB took {took:?}; {} AppStatus calls meanwhile, p99 {p99:?}, max {:?}",
        latencies.len(),
        latencies.last().unwrap()
    );
    assert!(!host.sandbox.path("appunit/apps/big").exists());
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");
    // A few calls stalled for as long as the deletion would hardly move the p99.
    let slowest = *latencies.last().unwrap();
    assert!(slowest < Duration::from_millis(500), "slowest {slowest:?}");
    assert_eq!(
        host.sandbox
            .systemctl(&["show", "-p", "MainPID", "--value", "appunitd"]),
        daemon_pid,
        "appunitd was restarted"
    );
    let journal = host.journal("appunitd.service");
    assert!(!journal.contains("Watchdog timeout"), "{journal}");
}

/// An install that failed because containerd was down made nothing: its uninstall
/// needs no containerd, and leaves no record.
#[tokio::test]
async fn an_install_that_made_nothing_uninstalls_while_containerd_is_down() {
    let host = Host::boot();
    host.sandbox.systemctl(&["stop", "containerd"]);
    let query = "app_name=duo&customer_app_name=early&app_version=1";
    assert_eq!(host.call("AppInstall", query).await.status, 200);
    let (status, _) = host.watch("early", Duration::from_secs(60), settled).await;
    assert_eq!(status["status"], "error", "{status}");
    let detail = status["status_reason"]["Detail"].as_str().unwrap();
    assert!(detail.contains("containerd"), "{detail}");

    let reply = host.call("AppUninstall", "app_id=early").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = host.call("AppStatus", "app_id=early").await;
    assert_eq!(reply.code(), "Param.APPID.NotExist", "{reply:?}");
    assert!(!host.sandbox.path("appunit/apps/early").exists());
    host.sandbox.systemctl(&["start", "containerd"]);
    assert!(host.leftovers("early").is_empty());
}
