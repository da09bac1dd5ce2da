//! What a dashboard shows of a running app, on real containerd and systemd: its logs
//! from the journal, what its slice uses, and one containerd shim for all its containers.
//! The tests run at once in sandboxes that share the host's cgroup tree: their apps'
//! names (and so their slices) differ.

mod common;

use common::host::Host;
use std::time::Duration;

async fn install(host: &Host, app_name: &str, app_id: &str) -> serde_json::Value {
    let query = format!("app_name={app_name}&customer_app_name={app_id}&app_version=1");
    assert_eq!(host.call("AppInstall", &query).await.status, 200);
    host.running(app_id, Duration::from_secs(120)).await
}

/// The messages AppLogs answers, each as "service: message".
async fn logs(host: &Host, query: &str) -> Vec<String> {
    let reply = host.call("AppLogs", query).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            assert!(entry["time"].as_str().unwrap().ends_with('Z'), "{entry}");
            format!(
                "{}: {}",
                entry["service"].as_str().unwrap(),
                entry["message"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn logs_usage_and_one_shim_per_app() {
    let host = Host::boot();
    install(&host, "duo", "blog").await;

    let all = logs(&host, "app_id=blog").await;
    for line in [
        "db: db starting",
        "web: web starting",
        "web: web reached db",
    ] {
        assert!(all.iter().any(|l| l == line), "{line:?} not in {all:#?}");
    }
    let web = logs(&host, "app_id=blog&service=web").await;
    assert!(web.iter().all(|l| l.starts_with("web: ")), "{web:#?}");
    assert!(web.iter().any(|l| l == "web: web reached db"), "{web:#?}");
    let last = logs(&host, "app_id=blog&lines=1").await;
    assert_eq!(last.len(), 1, "{last:?}");
    let bad = host.call("AppLogs", "app_id=blog&lines=0").await;
    assert_eq!(bad.code(), "Param.Format.Error", "{bad:?}");
    let none = host.call("AppLogs", "app_id=nosuch").await;
    assert_eq!(none.code(), "Param.APPID.NotExist", "{none:?}");

    // Both containers of the app are served by one shim.
    let shims = host
        .sandbox
        .run("pgrep", &["-c", "-f", "containerd-shim-runc-v2"]);
    assert_eq!(
        String::from_utf8_lossy(&shims.stdout).trim(),
        "1",
        "{shims:?}"
    );

    // usage is the slice's, and follows what the app takes.
    let status = install(&host, "hog", "hog").await;
    let before = status["usage"]["memory_bytes"].as_u64().unwrap();
    assert!(
        before > 0 && status["usage"]["tasks"].as_u64().unwrap() >= 2,
        "{status}"
    );
    std::fs::write(host.sandbox.path("appunit/apps/hog/data/signal/go"), "").unwrap();
    let (status, _) = host
        .watch("hog", Duration::from_secs(30), |s| {
            s["usage"]["memory_bytes"].as_u64().unwrap_or(0) > before + 45 * 1024 * 1024
        })
        .await;
    assert!(
        status["usage"]["cpu_usec"].as_u64().unwrap() > 0,
        "{status}"
    );
    let reply = host.call("AppStop", "app_id=hog").await;
    assert_eq!(reply.status, 200);
    assert!(host.status("hog").await["usage"].is_null());
}

/// The next event for `app_id` within `limit`.
async fn next_event(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<common::Event>,
    app_id: &str,
    limit: Duration,
) -> common::Event {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no event for {app_id} within {limit:?}"))
            .expect("the event stream ended");
        if event.data["app_id"] == app_id {
            return event;
        }
    }
}

#[tokio::test]
async fn events_and_followed_logs_come_as_they_happen() {
    let host = Host::boot();
    let (status, content_type, mut events) = common::events(&host.socket(), "/Events").await;
    assert_eq!((status, content_type.as_str()), (200, "text/event-stream"));

    // Every phase of an install, in order, with progress while the 48 MiB image pulls.
    let query = "app_name=duo&customer_app_name=news&app_version=2";
    assert_eq!(host.call("AppInstall", query).await.status, 200);
    let mut phases: Vec<String> = Vec::new();
    let mut progress_events = 0;
    while phases.last().map(String::as_str) != Some("30") {
        let event = next_event(&mut events, "news", Duration::from_secs(120)).await;
        assert_eq!(event.name, "app");
        let code = event.data["status_code"].as_str().unwrap().to_string();
        assert_ne!(code, "50", "{}", event.data);
        if code == "10" && event.data["progress"].is_object() {
            progress_events += 1;
        }
        if phases.last() != Some(&code) {
            phases.push(code);
        }
    }
    assert_eq!(phases, ["00", "10", "11", "12", "30"]);
    assert!(progress_events >= 2, "{progress_events} progress events");

    // A unit stopped by hand is an event within 100 ms of the command returning.
    let out = host
        .sandbox
        .run("systemctl", &["stop", "appunit-news.service"]);
    let returned = std::time::Instant::now();
    assert!(out.status.success(), "{out:?}");
    let event = next_event(&mut events, "news", Duration::from_secs(5)).await;
    assert_eq!(event.data["status_code"], "40", "{}", event.data);
    let lag = event.at.saturating_duration_since(returned);
    eprintln!("the stop came as an event {lag:?} after systemctl returned");
    assert!(lag < Duration::from_millis(100), "{lag:?}");

    // AppLogs with follow: the last lines, then new ones as the app writes them.
    let target = "/AppLogs?app_id=news&service=db&lines=1&follow=true";
    let (status, content_type, mut logs) = common::events(&host.socket(), target).await;
    assert_eq!((status, content_type.as_str()), (200, "text/event-stream"));
    let first = tokio::time::timeout(Duration::from_secs(5), logs.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.data["service"], "db", "{:?}", first.data);
    assert_eq!(host.call("AppStart", "app_id=news").await.status, 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let line = tokio::time::timeout_at(deadline, logs.recv())
            .await
            .expect("the start's output did not follow")
            .unwrap();
        assert_eq!(line.data["service"], "db", "{:?}", line.data);
        if line.data["message"] == "db starting" {
            break;
        }
    }
}

/// The truth rule: a unit stopped by hand is `stopped` (40) in the very next AppStatus and
/// AppList (whole or filtered, whichever comes first), never a stale `running`, however
/// fast the request follows the command.
#[tokio::test]
async fn a_unit_stopped_by_hand_is_stopped_in_the_next_answer() {
    let host = Host::boot();
    install(&host, "duo", "shop").await;
    // Where the daemon looks for the unit's processes (its cgroup, in the unified
    // hierarchy, which the sandbox mounts beside v1) is where they are.
    let cgroup = "appunit.slice/appunit-shop.slice/appunit-shop.service/cgroup.events";
    let events = host.sandbox.run(
        "sh",
        &[
            "-c",
            &format!("cat /sys/fs/cgroup/unified/{cgroup} || cat /sys/fs/cgroup/{cgroup}"),
        ],
    );
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(events.lines().any(|l| l == "populated 1"), "{events:?}");
    for round in 0..20 {
        let out = host
            .sandbox
            .run("systemctl", &["stop", "appunit-shop.service"]);
        assert!(out.status.success(), "{out:?}");
        // Each answer first in turn: the whole AppList (kept joined while nothing
        // changes, and it showed running just before), AppStatus, the filtered AppList.
        let whole = || async {
            let list = host.call("AppList", "").await;
            list.data()[0]["status_code"].as_str().unwrap().to_string()
        };
        let filtered = || async {
            let list = host.call("AppList", "customer_app_name=shop").await;
            list.data()[0]["status_code"].as_str().unwrap().to_string()
        };
        let status = || async {
            host.status("shop").await["status_code"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let codes = match round % 3 {
            0 => [whole().await, status().await, filtered().await],
            1 => [status().await, filtered().await, whole().await],
            _ => [filtered().await, whole().await, status().await],
        };
        assert_eq!(codes, ["40", "40", "40"], "round {round}");

        // The unit allows 3 starts in 5 minutes; this test's are not the ones it guards.
        let out = host
            .sandbox
            .run("systemctl", &["reset-failed", "appunit-shop.service"]);
        assert!(out.status.success(), "{out:?}");
        let out = host
            .sandbox
            .run("systemctl", &["start", "appunit-shop.service"]);
        assert!(out.status.success(), "{out:?}");
        // Started by hand, it shows running once systemd's signal is in.
        let (status, _) = host
            .watch("shop", Duration::from_secs(5), |s| s["status"] == "running")
            .await;
        assert_eq!(status["status"], "running", "round {round}: {status}");
        assert!(status["usage"]["tasks"].as_u64().unwrap() > 0, "{status}");
        let list = host.call("AppList", "").await;
        assert_eq!(
            list.data()[0]["status"],
            "running",
            "round {round}: {list:?}"
        );
    }
}
