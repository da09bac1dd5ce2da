//! AppUpgrade on real systemd and containerd (fixture app `evolve`): an upgrade that
//! works keeps the app answering while its images pull and ends on the new version with
//! the same data and password; upgrades to a version whose health check never passes,
//! one that crashes after it was ready, one that spoils the data and fails (from a
//! stopped app), and one whose image is missing each end on the old version, in the
//! state the app was in, with the data tree as it was and nothing of the failed version
//! left; a daemon killed in each upgrade phase converges at its next start; a rollback
//! that cannot make the old version again fails the app but keeps its data in a backup.

mod common;

use common::host::{Host, settled};
use common::images::{Layer, build_image_in};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// The test registry's busybox images under the fixture's tags: 2 is the large one,
/// so its pull lasts long enough to be watched.
const EVOLVE_TAGS: [(&str, &str); 5] = [
    ("busybox:1", "1"),
    ("busybox:2", "2"),
    ("busybox:1", "unhealthy"),
    ("busybox:1", "crash"),
    ("busybox:1", "spoil"),
];

fn publish_evolve(host: &Host, tags: &[(&str, &str)]) {
    for (from, to) in tags {
        let out = host.sandbox.run(
            "skopeo",
            &[
                "--insecure-policy",
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                "--preserve-digests",
                &format!("docker://127.0.0.1:5000/test/{from}"),
                &format!("docker://127.0.0.1:5000/test/evolve:{to}"),
            ],
        );
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every entry of the app's data tree: path → (mode, contents or link target).
fn data_tree(host: &Host, app_id: &str) -> BTreeMap<String, (u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    fn walk(root: &Path, dir: &Path, tree: &mut BTreeMap<String, (u32, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let name = path.strip_prefix(root).unwrap().display().to_string();
            let mode = meta.permissions().mode();
            if meta.is_dir() {
                tree.insert(name, (mode, Vec::new()));
                walk(root, &path, tree);
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                tree.insert(name, (mode, target.display().to_string().into_bytes()));
            } else {
                tree.insert(name, (mode, std::fs::read(&path).unwrap()));
            }
        }
    }
    let root = host.sandbox.path(&format!("appunit/apps/{app_id}/data"));
    let mut tree = BTreeMap::new();
    walk(&root, &root, &mut tree);
    assert!(tree.contains_key("dbdata/owner"), "{tree:?}");
    tree
}

/// Polls until the upgrade under way ended; the status then.
async fn upgrade_ended(host: &Host, app_id: &str) -> Value {
    let (status, _) = host
        .watch(app_id, Duration::from_secs(150), |s| {
            s["operation"].is_null() && s["last_operation"]["kind"] == "upgrade"
        })
        .await;
    status
}

async fn install(host: &Host, app_id: &str) -> Value {
    let query = format!("app_name=evolve&customer_app_name={app_id}&app_version=1");
    let reply = host.call("AppInstall", &query).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    host.running(app_id, Duration::from_secs(150)).await
}

async fn upgrade(host: &Host, app_id: &str, version: &str) {
    let reply = host
        .call(
            "AppUpgrade",
            &format!("app_id={app_id}&app_version={version}"),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.data()["app_id"], app_id, "{reply:?}");
}

/// `ctr` lines of the app's containers (with their images) and snapshots.
fn containers_and_snapshots(host: &Host, app_id: &str) -> (Vec<String>, usize) {
    let list = |args: &[&str]| {
        let mut command = vec!["-n", "appunit"];
        command.extend_from_slice(args);
        let out = host.sandbox.run("ctr", &command);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(&format!("{app_id}-")))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    (
        list(&["containers", "ls"]),
        list(&["snapshots", "ls"]).len(),
    )
}

fn images(host: &Host) -> String {
    let out = host
        .sandbox
        .run("ctr", &["-n", "appunit", "images", "ls", "-q"]);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// What the app runs: two containers of `version`'s image, one snapshot each, a unit
/// file, and the compose file of that version.
fn assert_runs_version(host: &Host, app_id: &str, version: &str) {
    let (containers, snapshots) = containers_and_snapshots(host, app_id);
    assert_eq!(containers.len(), 2, "{containers:?}");
    let image = format!("127.0.0.1:5000/test/evolve:{version}");
    assert!(
        containers
            .iter()
            .all(|c| c.split_whitespace().nth(1) == Some(image.as_str())),
        "{containers:?}"
    );
    assert_eq!(snapshots, 2, "{app_id}");
    let folder = host.sandbox.path(&format!("appunit/apps/{app_id}"));
    let compose = std::fs::read_to_string(folder.join("compose.yaml")).unwrap();
    assert!(compose.contains(&image), "{compose}");
    assert!(
        host.sandbox
            .path(&format!("units/appunit-{app_id}.service"))
            .exists()
    );
}

/// An upgrade to `bad` rolls back: the app ends as it was (running or stopped) on 1,
/// the same data tree, the cause in both reasons, nothing of `bad` left.
async fn rolls_back(host: &Host, app_id: &str, bad: &str, running: bool, cause: &str) {
    if !running {
        let reply = host.call("AppStop", &format!("app_id={app_id}")).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let before = data_tree(host, app_id);
    upgrade(host, app_id, bad).await;
    let status = upgrade_ended(host, app_id).await;
    let last = &status["last_operation"];
    assert_eq!(last["result"], "rolled_back", "{app_id}: {status}");
    let detail = last["reason"]["Detail"].as_str().unwrap_or_default();
    assert!(
        detail.to_lowercase().contains(cause),
        "{app_id}: {cause:?} not in {detail:?}"
    );
    eprintln!("{app_id}: {detail}");
    assert_eq!(status["status_reason"]["Detail"], detail, "{status}");
    assert_eq!(status["app_version"], "1", "{status}");
    let expected = if running { "running" } else { "stopped" };
    assert_eq!(status["status"], expected, "{app_id}: {status}");
    assert!(last["downtime_ms"].is_u64(), "{app_id}: {status}");
    if !running {
        assert_eq!(last["downtime_ms"], 0, "{app_id}: {status}");
    }
    assert_eq!(data_tree(host, app_id), before, "{app_id}: data changed");
    assert_runs_version(host, app_id, "1");
    assert!(
        !images(host).contains(&format!("test/evolve:{bad}")),
        "{app_id}: {}",
        images(host)
    );
    let backups: Vec<String> = std::fs::read_dir(host.sandbox.path("appunit/backups"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|name| name.contains(&format!("{app_id}-")))
        .collect();
    assert!(
        backups.is_empty(),
        "{app_id}: the rollback point stayed: {backups:?}"
    );
    if running {
        assert!(host.page(app_id).contains(&format!("evolve {app_id} 1")));
    }
}

/// The upgrade that works, watched: the old version answers while the new one pulls.
async fn upgrades(host: &Host, app_id: &str, password: &Value) {
    let before = data_tree(host, app_id);
    upgrade(host, app_id, "2").await;
    // One operation at a time; the Actions on the app wait for it.
    let again = host
        .call("AppUpgrade", &format!("app_id={app_id}&app_version=2"))
        .await;
    assert_eq!(again.code(), "App.Busy", "{again:?}");
    let stop = host.call("AppStop", &format!("app_id={app_id}")).await;
    assert_eq!(stop.code(), "App.Busy", "{stop:?}");
    let mut answered_while_pulling = 0;
    let mut saw_progress = false;
    loop {
        let status = host.status(app_id).await;
        if status["status_code"] != "10" {
            break;
        }
        assert_eq!(status["operation"]["kind"], "upgrade", "{status}");
        assert_eq!(status["operation"]["from_version"], "1", "{status}");
        assert_eq!(status["operation"]["to_version"], "2", "{status}");
        saw_progress |= status["progress"]["total_bytes"].as_u64() > Some(0);
        let page = host.page(app_id);
        assert!(
            page.contains(&format!("evolve {app_id} 1")),
            "v1 stopped answering while v2 pulled: {page:?}"
        );
        answered_while_pulling += 1;
    }
    assert!(answered_while_pulling > 0, "the pull was never seen");
    assert!(saw_progress, "no progress while pulling");
    let status = upgrade_ended(host, app_id).await;
    assert_eq!(status["last_operation"]["result"], "succeeded", "{status}");
    // From the old version's stop until the new one passed its health checks.
    let downtime = status["last_operation"]["downtime_ms"].as_u64();
    assert!(downtime.is_some_and(|ms| ms > 0), "{status}");
    assert_eq!(status["status"], "running", "{status}");
    assert_eq!(status["app_version"], "2", "{status}");
    assert!(status["status_reason"].is_null(), "{status}");
    assert_eq!(&status["running_info"]["password"], password);
    let after = data_tree(host, app_id);
    assert_eq!(after["dbdata/owner"], before["dbdata/owner"]);
    assert!(host.page(app_id).contains(&format!("evolve {app_id} 2")));
    assert_runs_version(host, app_id, "2");
    // The old version's data and record stay as a backup.
    let listed = host
        .call("AppBackupList", &format!("app_id={app_id}"))
        .await;
    let listed = listed.data().as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["app_version"], "1");
}

/// kill -9 of appunitd once the upgrade reached `phase`; the app converges at the next
/// start to 2 or back to 1 running, with its data.
async fn killed_in(host: &Host, app_id: &str, phase: &str) -> String {
    let owner = data_tree(host, app_id)["dbdata/owner"].clone();
    upgrade(host, app_id, "2").await;
    let (status, _) = host
        .watch(app_id, Duration::from_secs(60), |s| {
            s["status_code"].as_str().is_some_and(|c| c >= phase)
        })
        .await;
    let caught = status["status_code"].as_str().unwrap_or("").to_string();
    host.kill_daemon();
    host.start_daemon();
    let status = upgrade_ended(host, app_id).await;
    assert_eq!(status["status"], "running", "{app_id}: {status}");
    let version = status["app_version"].as_str().unwrap().to_string();
    let result = &status["last_operation"]["result"];
    match version.as_str() {
        "1" => assert_eq!(result, "rolled_back", "{status}"),
        _ => assert_eq!(result, "succeeded", "{status}"),
    }
    assert_eq!(data_tree(host, app_id)["dbdata/owner"], owner);
    assert_runs_version(host, app_id, &version);
    eprintln!("{app_id}: killed in {caught}, now {version}: {status}");
    caught
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrades_succeed_or_roll_back_data_and_images_together() {
    let host = Host::boot();
    publish_evolve(&host, &EVOLVE_TAGS);

    // Validation, in the seed's order.
    for (query, code) in [
        ("app_version=2", "Param.APPID.Blank"),
        ("app_id=nosuch&app_version=2", "Param.APPID.NotExist"),
    ] {
        assert_eq!(host.call("AppUpgrade", query).await.code(), code, "{query}");
    }

    let apps = [
        "evgood",
        "evunhealthy",
        "evcrash",
        "evspoil",
        "evmissing",
        "evkill10",
        "evkill11",
        "evkill12",
    ];
    let installed = futures_util::future::join_all(apps.map(|id| install(&host, id))).await;
    let password = installed[0]["running_info"]["password"].clone();
    assert_eq!(
        host.call("AppUpgrade", "app_id=evgood&app_version=9")
            .await
            .code(),
        "Param.AppVersion.NotExist"
    );

    // First, while nothing else pulls 2: the pull is long enough to be hit.
    let caught10 = killed_in(&host, "evkill10", "10").await;

    tokio::join!(
        upgrades(&host, "evgood", &password),
        rolls_back(&host, "evunhealthy", "unhealthy", true, "unhealthy"),
        rolls_back(&host, "evcrash", "crash", true, "exit"),
        rolls_back(&host, "evspoil", "spoil", false, "db"),
        rolls_back(&host, "evmissing", "missing", true, "evolve:missing"),
    );

    // The command line follows an upgrade to its end: a rollback exits non-zero naming
    // its cause; the same version again re-resolves its tags and succeeds.
    let cli = |app_id: &str, version: &str| {
        let socket = host.socket();
        let (app_id, version) = (app_id.to_string(), version.to_string());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_appunit"))
                .arg("--socket")
                .arg(socket)
                .args(["upgrade", &app_id, "--version", &version])
                .output()
                .unwrap()
        })
    };
    let out = cli("evunhealthy", "missing").await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("evunhealthy is back on 1 (running)") && stderr.contains("evolve:missing"),
        "{stderr}"
    );
    let out = cli("evgood", "2").await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("evgood (Evolve 2): running"), "{stdout}");
    assert_runs_version(&host, "evgood", "2");

    let caught11 = killed_in(&host, "evkill11", "11").await;
    let caught12 = killed_in(&host, "evkill12", "12").await;
    eprintln!("phases the kills hit: {caught10} {caught11} {caught12}");
    assert_eq!(caught10, "10");
    assert!(caught11 == "11" || caught11 == "12", "{caught11}");
    assert_eq!(caught12, "12");

    // The same version again, its tag moved meanwhile to an image that cannot start:
    // the rollback points the tag at the old digest again, and holds nothing more.
    let digest_of_1 = || {
        let out = host.sandbox.run("ctr", &["-n", "appunit", "images", "ls"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("127.0.0.1:5000/test/evolve:1 "))
            .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
            .unwrap()
    };
    let old_digest = digest_of_1();
    let broken = build_image_in(
        &host.sandbox.path("run/images"),
        &[Layer::file("hello", "no shell here")],
        &["sh"],
    );
    host.sandbox.push(broken.layout.path(), "test/evolve:1");
    let before = data_tree(&host, "evcrash");
    upgrade(&host, "evcrash", "1").await;
    let status = upgrade_ended(&host, "evcrash").await;
    eprintln!("evcrash again on 1: {}", status["last_operation"]);
    assert_eq!(
        status["last_operation"]["result"], "rolled_back",
        "{status}"
    );
    assert_eq!(status["status"], "running", "{status}");
    assert_eq!(digest_of_1(), old_digest);
    assert_eq!(data_tree(&host, "evcrash"), before);
    assert_runs_version(&host, "evcrash", "1");
    assert!(
        !images(&host).contains("appunit-rollback"),
        "{}",
        images(&host)
    );

    cannot_roll_back_but_keeps_the_data(&host).await;

    let leases = host
        .sandbox
        .run("ctr", &["-n", "appunit", "leases", "ls", "-q"]);
    assert!(String::from_utf8_lossy(&leases.stdout).trim().is_empty());
}

/// A rollback that cannot make the old version again (its image went from containerd
/// and the registry is down) loses no data: the app fails naming the rollback point's
/// backup, which is kept, and restores the data as it was.
async fn cannot_roll_back_but_keeps_the_data(host: &Host) {
    let app_id = "evmissing";
    let before = data_tree(host, app_id);
    upgrade(host, app_id, "unhealthy").await;
    // In `12` the old containers are gone and the new ones wait for health.
    host.watch(app_id, Duration::from_secs(60), |s| {
        s["status_code"] == "12"
    })
    .await;
    host.sandbox.systemctl(&["stop", "test-registry.service"]);
    let removed = host.sandbox.run(
        "ctr",
        &[
            "-n",
            "appunit",
            "images",
            "rm",
            "127.0.0.1:5000/test/evolve:1",
        ],
    );
    assert!(removed.status.success(), "{removed:?}");

    let status = upgrade_ended(host, app_id).await;
    let last = &status["last_operation"];
    assert_eq!(last["result"], "failed", "{status}");
    assert_eq!(status["status"], "error", "{status}");
    let detail = last["reason"]["Detail"].as_str().unwrap_or_default();
    let backup = detail
        .split_once("is in the backup ")
        .map(|(_, name)| name.trim().to_string())
        .unwrap_or_else(|| panic!("no backup named in {detail:?}"));
    let listed = host
        .call("AppBackupList", &format!("app_id={app_id}"))
        .await;
    assert!(
        listed
            .data()
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["backup"] == backup.as_str()),
        "{backup} not listed: {listed:?}"
    );

    host.sandbox.start_registry();
    publish_evolve(host, &EVOLVE_TAGS[..1]);
    let restore = host
        .call(
            "AppRestore",
            &format!("backup={backup}&customer_app_name=evfound"),
        )
        .await;
    assert_eq!(restore.status, 200, "{restore:?}");
    let (status, _) = host
        .watch("evfound", Duration::from_secs(120), settled)
        .await;
    assert_eq!(status["status"], "running", "{status}");
    // The web service writes its page on start, naming the app: the database is the data.
    let database = |tree: BTreeMap<String, (u32, Vec<u8>)>| -> BTreeMap<_, _> {
        tree.into_iter()
            .filter(|(path, _)| path.starts_with("dbdata"))
            .collect()
    };
    assert_eq!(database(data_tree(host, "evfound")), database(before));
}
