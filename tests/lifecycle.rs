//! Apps as systemd units, end to end: appunitd runs inside the systemd sandbox with a
//! registry there, and installs a two-service app through every phase to running.

mod common;

use appunit::store::{Store, UninstallRequest};
use common::host::{Host, is_code, publish_images, settled};
use common::sandbox::Sandbox;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[tokio::test]
async fn install_to_running_and_every_lifecycle_action() {
    let host = Host::boot();
    // appunitd.socket made the socket: 0660, group appunit.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let socket = std::fs::metadata(host.sandbox.path("run/appunit/appunit.sock")).unwrap();
    let group = nix::unistd::Group::from_name("appunit").unwrap().unwrap();
    assert_eq!(
        (socket.permissions().mode() & 0o777, socket.gid()),
        (0o660, group.gid.as_raw())
    );
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
    // Both containers run in the app's slice, each in its scope (runc's systemd driver).
    for scope in ["appunit-blog-web.scope", "appunit-blog-db.scope"] {
        let shown = host
            .sandbox
            .systemctl(&["show", "-p", "Slice,ActiveState", scope]);
        assert_eq!(
            shown, "Slice=appunit-blog.slice\nActiveState=active",
            "{scope}"
        );
    }

    // The app's slice accounts for what its containers' scopes ask of systemd (I/O
    // too): stopping and starting the app then changes no controller above the slice.
    // On cgroup v1 each such change made systemd move the root's processes between
    // hierarchies, and took 50 ms of every AppStart.
    let root_changes = || {
        host.journal("-.slice")
            .lines()
            .filter(|line| line.starts_with("-.slice: Failed to migrate controller cgroups"))
            .count()
    };
    let root_changed = root_changes();

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
    assert_eq!(root_changes(), root_changed, "{}", host.journal("-.slice"));
    let before = host.task_pids();
    assert_eq!(before.len(), 2);

    assert_eq!(host.call("AppRestart", "app_id=blog").await.status, 200);
    assert_eq!(host.status("blog").await["status"], "running");
    let after = host.task_pids();
    assert_eq!(after.len(), 2);
    assert!(before.is_disjoint(&after), "{before:?} → {after:?}");

    // The supervisor dies (not its containers): systemd restarts it, and it takes the
    // running containers back instead of starting new ones.
    host.sandbox.systemctl(&[
        "kill",
        "-s",
        "KILL",
        "--kill-whom=main",
        "appunit-blog.service",
    ]);
    host.watch("blog", Duration::from_secs(5), |s| s["status"] != "running")
        .await;
    host.watch("blog", Duration::from_secs(30), |s| {
        s["status"] == "running"
    })
    .await;
    assert_eq!(host.task_pids(), after);

    // The password stays between root and the API.
    for file in ["compose.yaml", "plan.json"] {
        let mode = std::fs::metadata(host.sandbox.path("appunit/apps/blog").join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }

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

/// Apps keep running while the daemon is stopped; after a reboot running apps come
/// back and stopped ones stay stopped; uninstalling with delete_data=false keeps the
/// data, and a reinstall under the same name finds what the app wrote.
#[tokio::test]
async fn daemon_stop_reboot_and_kept_data() {
    let host = Host::boot();
    for app_id in ["keep", "halt"] {
        let query = format!("app_name=duo&customer_app_name={app_id}&app_version=1");
        assert_eq!(host.call("AppInstall", &query).await.status, 200);
    }
    for app_id in ["keep", "halt"] {
        host.running(app_id, Duration::from_secs(90)).await;
    }
    assert_eq!(host.call("AppStop", "app_id=halt").await.status, 200);

    host.sandbox.systemctl(&["stop", "appunitd.service"]);
    assert_eq!(
        host.sandbox
            .systemctl(&["is-active", "appunit-keep.service"]),
        "active"
    );
    assert_eq!(host.page("keep"), "duo keep\n");
    host.start_daemon();
    assert_eq!(host.status("keep").await["status"], "running");
    assert_eq!(host.status("halt").await["status"], "stopped");

    let owner_file = |sandbox: &Sandbox| sandbox.path("appunit/apps/keep/data/dbdata/owner");
    let owner = std::fs::read_to_string(owner_file(&host.sandbox)).unwrap();
    assert!(owner.starts_with("keep-"), "{owner}");
    // The named volume started with the image's /www; the app wrote its page over it.
    let site = host.sandbox.path("appunit/apps/keep/data/site");
    assert_eq!(
        std::fs::read_to_string(site.join("about.html")).unwrap(),
        "from the image\n"
    );
    assert_eq!(
        std::fs::read_to_string(site.join("index.html")).unwrap(),
        "duo keep\n"
    );

    let folders = host.sandbox.shut_down();
    let host = Host::on(Sandbox::boot_in(folders, ""));
    host.start_daemon();
    let (status, _) = host
        .watch("keep", Duration::from_secs(60), |s| {
            s["status"] == "running"
        })
        .await;
    assert_eq!(status["status_code"], "30");
    assert_eq!(host.page("keep"), "duo keep\n");
    assert_eq!(host.status("halt").await["status"], "stopped");
    assert_eq!(
        host.sandbox
            .systemctl(&["is-active", "appunit-halt.service"]),
        "inactive"
    );

    let reply = host
        .call("AppUninstall", "app_id=keep&delete_data=false")
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        std::fs::read_to_string(owner_file(&host.sandbox)).unwrap(),
        owner
    );
    assert!(!host.sandbox.path("appunit/apps/keep/plan.json").exists());
    // The registry kept its images in the old /run.
    publish_images(&host.sandbox);
    let reply = host
        .call(
            "AppInstall",
            "app_name=duo&customer_app_name=keep&app_version=1",
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    host.running("keep", Duration::from_secs(90)).await;
    assert_eq!(
        std::fs::read_to_string(owner_file(&host.sandbox)).unwrap(),
        owner
    );
}

/// `user: web` runs as the uid and primary gid of `web` in the image's /etc/passwd;
/// `web:staff` with the gid of `staff` in its /etc/group.
#[tokio::test]
async fn image_user_names_resolve_in_the_image() {
    let host = Host::boot();
    let query = "app_name=whoami&customer_app_name=who&app_version=1";
    assert_eq!(host.call("AppInstall", query).await.status, 200);
    host.running("who", Duration::from_secs(60)).await;
    for (service, expected) in [("web", "1234 1235"), ("admin", "1234 50")] {
        let script = format!(
            "pid=$(ctr -n appunit tasks ls | awk '$1 == \"who-{service}\" {{print $2}}'); \
             awk '/^Uid|^Gid/ {{print $2}}' /proc/$pid/status | paste -sd ' '"
        );
        let ids = host.sandbox.run("sh", &["-c", &script]);
        assert_eq!(
            String::from_utf8_lossy(&ids.stdout).trim(),
            expected,
            "{service}"
        );
    }
}

/// `kill -9` of appunitd while an install is pulling, creating or initing: after a
/// restart every install ends running, none is stuck, and no lease is left. An
/// uninstall cut short is finished by the next start.
#[tokio::test]
async fn installs_survive_a_daemon_crash_in_every_phase() {
    let host = Host::boot();
    // (app, version, the status to crash in)
    let cases = [
        ("pull", "2", "10"),
        ("create", "1", "11"),
        ("init", "1", "12"),
    ];
    let mut caught = Vec::new();
    for (app_id, version, phase) in cases {
        let query = format!("app_name=duo&customer_app_name={app_id}&app_version={version}");
        assert_eq!(host.call("AppInstall", &query).await.status, 200);
        // Creating is brief: it may pass between two polls; then initing is hit instead.
        let (status, _) = host
            .watch(app_id, Duration::from_secs(60), |s| {
                s["status_code"].as_str().is_some_and(|c| c >= phase)
            })
            .await;
        caught.push((
            app_id,
            status["status_code"].as_str().unwrap_or("").to_string(),
        ));
        host.kill_daemon();
        host.start_daemon();
        host.running(app_id, Duration::from_secs(120)).await;
    }
    assert_eq!(caught[0].1, "10", "{caught:?}");
    assert_eq!(caught[2].1, "12", "{caught:?}");
    eprintln!("phases the crashes hit: {caught:?}");
    let leases = host
        .sandbox
        .run("ctr", &["-n", "appunit", "leases", "ls", "-q"]);
    assert!(String::from_utf8_lossy(&leases.stdout).trim().is_empty());

    // An uninstall cut short (recorded as begun, nothing torn down yet) is finished at
    // the next start, deleting what it was asked to: here the data, not the image.
    host.kill_daemon();
    let store = Store::open(&host.sandbox.path("appunit/appunit.db")).unwrap();
    let init = store.get("init").unwrap().unwrap();
    let request = UninstallRequest {
        delete_data: true,
        delete_image: false,
    };
    store.begin_uninstall(&init, request).unwrap();
    drop(store);
    host.start_daemon();
    // The record goes last, after the folder: an answer without the app ends it.
    host.watch("init", Duration::from_secs(60), |s| s.is_null())
        .await;
    assert!(!host.sandbox.path("appunit/apps/init").exists());
    let reply = host.call("AppStatus", "app_id=init").await;
    assert_eq!(reply.code(), "Param.APPID.NotExist", "{reply:?}");
    let left = host.leftovers("init");
    assert!(left.is_empty(), "init left behind: {left:?}");

    for (app_id, _, _) in &cases[..2] {
        assert_eq!(
            host.call("AppUninstall", &format!("app_id={app_id}"))
                .await
                .status,
            200
        );
        let left = host.leftovers(app_id);
        assert!(left.is_empty(), "{app_id} left behind: {left:?}");
    }
}

/// Ports are published on the host: two installs of one app get their own ports and
/// pages, a port some other program listens on is skipped, and uninstalling leaves no
/// network namespace, veth, bridge port or iptables rule.
#[tokio::test]
async fn apps_are_reachable_on_their_own_ports() {
    let host = Host::boot();
    // Something else on the host listens on 9102.
    host.sandbox
        .service("squatter", &["/bin/busybox", "httpd", "-f", "-p", "9102"]);
    host.sandbox.wait_until("the squatter", |s| {
        String::from_utf8_lossy(&s.run("cat", &["/proc/net/tcp", "/proc/net/tcp6"]).stdout)
            .contains(":238E ")
    });
    for app_id in ["one", "two"] {
        let query = format!("app_name=duo&customer_app_name={app_id}&app_version=1");
        assert_eq!(host.call("AppInstall", &query).await.status, 200);
    }
    // The third through the command line, which follows the install until it runs.
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_appunit"))
        .arg("--socket")
        .arg(host.sandbox.path("run/appunit/appunit.sock"))
        .args(["install", "duo", "--name", "three", "--version", "1"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(printed.contains("three (Duo 1): running"), "{printed}");
    assert!(
        printed.contains("url:      http://127.0.0.1:9103"),
        "{printed}"
    );
    let mut ports = Vec::new();
    for app_id in ["one", "two", "three"] {
        let status = host.running(app_id, Duration::from_secs(120)).await;
        ports.push(status["running_info"]["port"].as_u64().unwrap());
    }
    assert_eq!(ports, [9100, 9101, 9103]);
    let gateway = "10.89.0.1"; // appunit0: an address of the host
    for (app_id, port) in ["one", "two", "three"].iter().zip(&ports) {
        for address in ["127.0.0.1", gateway] {
            let url = format!("http://{address}:{port}/");
            let out = host.sandbox.run("busybox", &["wget", "-qO-", &url]);
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                format!("duo {app_id}\n"),
                "{url}"
            );
        }
    }
    // In a terminal (tmux), the install shows a live bar: bytes while pulling, then the
    // phase, and at the end the URL.
    let session = format!("appunit-cli-{}", std::process::id());
    let command = format!(
        "{} --socket {} install duo --name four --version 2; sleep 60",
        env!("CARGO_BIN_EXE_appunit"),
        host.sandbox.path("run/appunit/appunit.sock").display()
    );
    let tmux = |args: &[&str]| {
        std::process::Command::new("tmux")
            .args(args)
            .output()
            .unwrap()
    };
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "120",
        "-y",
        "30",
        &command,
    ]);
    assert!(started.status.success());
    let mut screens = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let screen = tmux(&["capture-pane", "-p", "-t", &session]).stdout;
        let screen = String::from_utf8_lossy(&screen).to_string();
        let done = screen.contains("url:");
        screens.push(screen);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tmux(&["kill-session", "-t", &session]);
    let last = screens.last().cloned().unwrap_or_default();
    assert!(last.contains("four (Duo 2): running"), "{last}");
    assert!(last.contains("url:      http://127.0.0.1:9104"), "{last}");
    let pulling = screens.iter().filter(|s| s.contains("pulling"));
    assert!(
        pulling.clone().any(|s| s.contains("MiB/")),
        "no byte progress: {screens:?}"
    );

    for app_id in ["one", "two", "three", "four"] {
        assert_eq!(
            host.call("AppUninstall", &format!("app_id={app_id}"))
                .await
                .status,
            200
        );
    }
    let netns = host.sandbox.run("ip", &["netns", "list"]);
    assert!(!String::from_utf8_lossy(&netns.stdout).contains("appunit-"));
    let links =
        String::from_utf8_lossy(&host.sandbox.run("ip", &["-o", "link"]).stdout).to_string();
    assert!(!links.contains("veth"), "{links}");
    let bridge_ports = host
        .sandbox
        .run("ip", &["link", "show", "master", "appunit0"]);
    assert!(
        String::from_utf8_lossy(&bridge_ports.stdout)
            .trim()
            .is_empty()
    );
    let rules = String::from_utf8_lossy(&host.sandbox.run("iptables-save", &[]).stdout).to_string();
    for app_id in ["one", "two", "three", "four"] {
        assert!(!rules.contains(&format!("appunit-{app_id}")), "{rules}");
    }
    assert!(!rules.contains("dport 9100"), "{rules}");
}

/// 20 installs at once: 20 distinct ports, and every app reaches running.
#[tokio::test]
async fn twenty_concurrent_installs_all_run() {
    let host = Host::boot();
    let host = std::sync::Arc::new(host);
    let names: Vec<String> = (0..20).map(|i| format!("app{i:02}")).collect();
    let mut calls = Vec::new();
    for name in &names {
        let (host, name) = (host.clone(), name.clone());
        calls.push(tokio::spawn(async move {
            let query = format!("app_name=duo&customer_app_name={name}&app_version=1");
            host.call("AppInstall", &query).await.status
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    let mut ports = std::collections::BTreeMap::new();
    for name in &names {
        let status = host.running(name, Duration::from_secs(300)).await;
        ports.insert(
            name.clone(),
            status["running_info"]["port"].as_u64().unwrap(),
        );
    }
    let distinct: BTreeSet<u64> = ports.values().copied().collect();
    assert_eq!(distinct.len(), 20, "{ports:?}");
    for (name, port) in &ports {
        let out = host.sandbox.run(
            "busybox",
            &["wget", "-qO-", &format!("http://127.0.0.1:{port}/")],
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("duo {name}\n")
        );
    }
    for name in &names {
        assert_eq!(
            host.call("AppUninstall", &format!("app_id={name}"))
                .await
                .status,
            200
        );
        assert!(host.leftovers(name).is_empty());
    }
}
